"""The labelled evaluation set: papers judged by topic, and precision/recall against it.

Shared by tests/test_eval.py (which holds the floor) and bench/bench_quality.py (which
prints the figures beside a plain keyword baseline).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from digest.config import Settings, WatchlistSettings, load_settings
from digest.models import Paper, paper_key
from digest.scoring import Matcher

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
    papers, relevant = [], {}
    for line in (EVAL / "papers.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        papers.append(Paper(
            key=paper_key(guid=row["id"]), title=row["title"], url="", abstract=row["abstract"],
            authors=tuple(row["authors"]), categories=tuple(row["categories"]),
            primary_category=row["categories"][0]))
        for name in row["relevant_to"]:
            relevant.setdefault(name, set()).add(f"guid:{row['id']}")
    settings = load_settings(EVAL / "watchlists.toml", env={})
    return papers, relevant, settings


def evaluate(found: Callable[[WatchlistSettings], set[str]], papers: Iterable[Paper],
             relevant: dict[str, set[str]], settings: Settings) -> dict[str, Scores]:
    out = {}
    for watchlist in settings.watchlists:
        chosen = found(watchlist)
        wanted = relevant.get(watchlist.name, set())
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


def micro(scores: dict[str, Scores]) -> Scores:
    return Scores(sum(s.true_positives for s in scores.values()),
                  sum(s.false_positives for s in scores.values()),
                  sum(s.false_negatives for s in scores.values()))
