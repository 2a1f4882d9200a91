"""The lookback window scored for a run: kept matches for papers scored before, fresh
scores for the papers that are new or changed since.

A watchlist's matches are kept in the store under a fingerprint of everything its verdicts
depend on (its definition, its model and ratings, the texts of its seeds or likes and the
word counts they are weighed by, the scoring code, the window's length). While the
fingerprint holds, only papers added or changed after the last scored change number are
scored again, so a run costs what the day brought, not what the window holds. A watchlist
whose verdicts move with the day (a recency boost), or whose fingerprint changed, is
scored over the whole window, as every watchlist is with ``incremental=False``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from digest.config import WatchlistSettings
from digest.models import Match, Paper
from digest.scoring import Matcher
from digest.store import Store
from digest.store.db import Candidates, KeptScores, reasons_from_json

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

SCORING_CHUNK = 2000  # papers read and scored at once


@dataclass
class ScoredWindow:
    """What the window holds for each watchlist: its matches that some channel of it may
    still be sent (all a digest can use), and how many it matched in all."""

    papers: int = 0  # papers first seen in the window
    scored: int = 0  # papers scored this run (for at least one watchlist)
    whole: list[str] = field(default_factory=list)  # watchlists scored over the window
    open: dict[str, list[Match]] = field(default_factory=dict)
    matched: dict[str, int] = field(default_factory=dict)


def score_window(
    matcher: Matcher,
    store: Store,
    watchlists: Sequence[WatchlistSettings],
    candidates: Candidates,
    *,
    since: datetime,
    now: datetime,
    lookback_days: int,
    incremental: bool = True,
    progress: Progress = lambda line: None,
) -> ScoredWindow:
    """Score the window for ``watchlists`` and keep what was scored for the next run."""
    out = ScoredWindow(papers=store.window_count(since))
    through = store.last_change()
    state = store.scoring_state() if incremental else {}
    fingerprints = {w.name: f"{matcher.fingerprint(w.name)}:{lookback_days}"
                    for w in watchlists}
    resume: dict[int, list[str]] = defaultdict(list)  # change number -> watchlists
    for w in watchlists:
        kept = state.get(w.name)
        if kept is None or kept[0] != fingerprints[w.name] or matcher.volatile(w.name):
            out.whole.append(w.name)
        else:
            resume[kept[1]].append(w.name)

    fresh: dict[str, list[Match]] = {w.name: [] for w in watchlists}
    stubs: dict[str, Paper] = {}  # one stand-in per matched paper, whatever matched it
    rescored: dict[str, frozenset[str]] = {}  # watchlist -> the papers scored for it now
    groups = ([(0, out.whole, "papers")] if out.whole else []) + [
        (after, names, "new or changed papers") for after, names in sorted(resume.items())]
    for after, names, what in groups:
        count = store.count_changed(since, after)
        if count:
            rest = " (the rest of the window is kept)" if after else ""
            progress(f"scoring {count} {what} against {_count(names, 'watchlist')}{rest}")
        keys: set[str] = set()
        # A chunk at a time: only the papers some watchlist matched stay in memory.
        for papers in store.changed_since(since, after, chunk=SCORING_CHUNK):
            _add(fresh, matcher.match_many(papers, now=now, names=names), stubs)
            keys.update(p.key for p in papers)
        scored_now = frozenset(keys)
        rescored.update((name, scored_now) for name in names)
        out.scored = max(out.scored, len(keys))

    channels = {w.name: w.channels for w in watchlists}

    def still_open(name: str, key: str) -> bool:
        return any(candidates.open(channel, key) for channel in channels[name])

    for w in watchlists:
        out.open[w.name] = [m for m in fresh[w.name] if still_open(w.name, m.paper.key)]
        out.matched[w.name] = len(fresh[w.name])
    # Kept matches: counted all, read (reasons and paper) only when a channel may use them,
    # one at a time: a window's kept matches can be millions, their rows twice the matches.
    kept_names = [n for names in resume.values() for n in names]
    upvotes = store.recent_upvotes(since) if kept_names else {}
    named = {name: name for name in kept_names}  # one string per name, not one per row
    for row_name, key, score, reasons in store.kept_matches(since, kept_names):
        name = named[row_name]
        if key in rescored[name]:
            continue
        out.matched[name] += 1
        if still_open(name, key) and key in upvotes:  # a paper the store still holds
            paper = stubs.get(key) or stubs.setdefault(key, Paper(
                key=key, title="", url="", upvotes=upvotes[key]))
            out.open[name].append(Match(paper=paper, watchlist=name, score=score,
                                        reasons=reasons_from_json(reasons)))
    store.keep_scores({w.name: KeptScores(fingerprints[w.name], w.name in out.whole,
                                          fresh[w.name], rescored[w.name])
                       for w in watchlists}, through=through, since=since, now=now)
    return out


def _add(into: dict[str, list[Match]], scored: dict[str, list[Match]],
         stubs: dict[str, Paper]) -> None:
    """Matches, each holding a stand-in for its paper that keeps what ranking reads (the
    key and the upvotes): a day's matches can be many times its digests' papers, and
    ``papers_for`` reads the whole paper of those a digest takes."""
    for name, matches in scored.items():
        for m in matches:
            paper = stubs.get(m.paper.key) or stubs.setdefault(m.paper.key, Paper(
                key=m.paper.key, title="", url="", upvotes=m.paper.upvotes))
            into[name].append(replace(m, paper=paper))


class PaperReader:
    """The whole papers of the matches a digest takes, read from the store as digests need
    them; the ``keep`` used most recently are remembered (a paper is often in many
    digests). Remembering more than a day's papers only grows with the window."""

    def __init__(self, store: Store, keep: int = 2048) -> None:
        self.store, self.keep = store, keep
        self.papers: OrderedDict[str, Paper] = OrderedDict()

    def __call__(self, matches: Iterable[Match]) -> list[Match]:
        matches = list(matches)
        missing = {m.paper.key for m in matches if m.paper.key not in self.papers}
        if missing:
            self.papers.update(self.store.papers(missing))
        out = []
        for m in matches:
            paper = self.papers.get(m.paper.key)
            if paper is None:  # no longer stored: the stand-in stays
                out.append(m)
                continue
            self.papers.move_to_end(m.paper.key)
            out.append(replace(m, paper=paper))
        while len(self.papers) > self.keep:
            self.papers.popitem(last=False)
        return out


def _count(names: Iterable[str], noun: str) -> str:
    count = len(list(names))
    return f"{count} {noun}{'s' if count != 1 else ''}"
