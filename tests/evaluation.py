"""The labelled evaluation set: papers judged by topic, and precision/recall against it.

Shared by tests/test_eval.py (which holds the floor) and bench/bench_quality.py (which
prints the figures beside a plain keyword baseline).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from digest.config import Settings, WatchlistSettings, load_settings
from digest.models import Paper, paper_key
from digest.scoring import Matcher
from digest.sources.base import SourceState
from digest.store import Store

EVAL = Path(__file__).resolve().parent / "eval"
NOW = datetime(2026, 11, 20, tzinfo=UTC)


@dataclass(frozen=True)
class Scores:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def load() -> tuple[list[Paper], dict[str, set[str]], Settings]:
    """Papers, the ids relevant to each watchlist, and the evaluation watchlists."""
    return _read("papers.jsonl", "watchlists.toml")


def load_cases(*, arxiv_facts: bool = True
               ) -> tuple[list[Paper], dict[str, set[str]], Settings, dict[str, set[str]]]:
    """The same for the watchlist-language cases, and the papers each case watchlist is
    judged on: each is written with one feature that plain keywords lack and judged on the
    papers written for it (its "case"), so the cases need no labels for each other.

    A case listed without categories or with a partial author list (as Hugging Face lists
    papers) carries what arXiv says of it under "arxiv"; with ``arxiv_facts`` the store
    merges that in, as a run does before scoring.
    """
    papers, relevant, settings = _read(CASES, "watchlist_cases.toml", arxiv_facts=arxiv_facts)
    scope: dict[str, set[str]] = {}
    for line, paper in zip((EVAL / CASES).read_text(encoding="utf-8").splitlines(), papers,
                           strict=True):
        scope.setdefault(json.loads(line)["case"], set()).add(paper.key)
    return papers, relevant, settings, scope


CASES = "watchlist_cases.jsonl"


def _read(papers_file: str, watchlists_file: str, *, arxiv_facts: bool = True
          ) -> tuple[list[Paper], dict[str, set[str]], Settings]:
    papers, relevant, facts = [], {}, []
    for line in (EVAL / papers_file).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        arxiv_id = row.get("arxiv_id")
        paper = Paper(
            key=f"arxiv:{arxiv_id}" if arxiv_id else paper_key(guid=row["id"]),
            title=row["title"], url="", abstract=row["abstract"], arxiv_id=arxiv_id,
            authors=tuple(row["authors"]), categories=tuple(row["categories"]),
            primary_category=row["categories"][0] if row["categories"] else None)
        papers.append(paper)
        if "arxiv" in row:
            facts.append(replace(paper, categories=tuple(row["arxiv"]["categories"]),
                                 authors=tuple(row["arxiv"]["authors"]),
                                 primary_category=row["arxiv"]["categories"][0]))
        for watchlist in row["relevant_to"]:
            relevant.setdefault(watchlist, set()).add(paper.key)
    if arxiv_facts and facts:
        papers = with_arxiv_facts(papers, facts)
    return papers, relevant, load_settings(EVAL / watchlists_file, env={})


def with_arxiv_facts(papers: list[Paper], facts: list[Paper]) -> list[Paper]:
    """The papers after a store has merged in what arXiv says of the listed ones."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "eval.db") as store:
        listed = {f.key for f in facts}
        store.record_batch("hf", [p for p in papers if p.key in listed], SourceState(), NOW)
        store.record_arxiv_facts(facts, asked=[f.arxiv_id for f in facts if f.arxiv_id],
                                 now=NOW)
        merged = store.papers(listed)
    return [merged.get(p.key, p) if p.key in listed else p for p in papers]


def evaluate(found: Callable[[WatchlistSettings], set[str]], papers: Iterable[Paper],
             relevant: dict[str, set[str]], settings: Settings,
             scope: dict[str, set[str]] | None = None) -> dict[str, Scores]:
    """Scores per watchlist; with ``scope``, each judged only on the papers it names."""
    out = {}
    for watchlist in settings.watchlists:
        chosen = found(watchlist)
        wanted = relevant.get(watchlist.name, set())
        if scope is not None:
            chosen, wanted = chosen & scope[watchlist.name], wanted & scope[watchlist.name]
        out[watchlist.name] = Scores(len(chosen & wanted), len(chosen - wanted),
                                     len(wanted - chosen))
    return out


def scorer(papers: list[Paper], settings: Settings) -> Callable[[WatchlistSettings], set[str]]:
    matcher = Matcher(settings.watchlists)
    matched: dict[str, set[str]] = {}
    for paper in papers:
        for match in matcher.match(paper, now=NOW):
            matched.setdefault(match.watchlist, set()).add(paper.key)
    return lambda watchlist: matched.get(watchlist.name, set())


def keyword_baseline(papers: list[Paper]) -> Callable[[WatchlistSettings], set[str]]:
    """Any keyword as a case-insensitive whole word in title, abstract or authors."""

    def found(watchlist: WatchlistSettings) -> set[str]:
        patterns = [re.compile(r"\b" + re.escape(k.term.text) + r"\b", re.IGNORECASE)
                    for k in watchlist.keywords]
        return {p.key for p in papers
                if any(pattern.search(f"{p.title}\n{p.abstract}\n{', '.join(p.authors)}")
                       for pattern in patterns)}

    return found


def macro_f1(scores: dict[str, Scores]) -> float:
    return sum(s.f1 for s in scores.values()) / len(scores)


def micro(scores: dict[str, Scores]) -> Scores:
    return Scores(sum(s.true_positives for s in scores.values()),
                  sum(s.false_positives for s in scores.values()),
                  sum(s.false_negatives for s in scores.values()))
