"""Watchlists compiled once; ``score`` says whether a paper matches, how well, and why.

No I/O here. Matching is case-insensitive on word boundaries; phrases match across
hyphen/space variants and simple plurals; authors match by whole normalised name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from digest.config import Term, WatchlistSettings
from digest.models import Match, Paper, Reason, fold_text

TITLE_FACTOR = 2.0  # a term in the title says more than the same term in the abstract
ABSTRACT_FACTOR = 1.0
REPEAT_BONUS = 0.25  # each further occurrence in a field adds this share of the weight...
REPEAT_CAP = 2  # ...for at most this many further occurrences, so repeats saturate
AUTHOR_POINTS = 3.0
CATEGORY_ONLY_POINTS = 1.0

_SEPARATOR = r"[\s\-\u2010\u2011\u2012\u2013\u2014_/]*"
_SPLIT = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014_/]+")
_NAME_PUNCT = re.compile(r"[^\w\s]|_")


def _plural_forms(token: str) -> str:
    """A regex for a word and its simple plural (or singular, if written as plural)."""
    lower = token.lower()
    if len(lower) > 3 and lower.endswith("ies"):
        return re.escape(token[:-3]) + "(?:y|ies)"
    if len(lower) > 3 and lower.endswith("s") and not lower.endswith(("ss", "us", "is")):
        return re.escape(token[:-1]) + "(?:s|es)?"
    if len(lower) > 2 and lower.endswith("y") and lower[-2] not in "aeiou":
        return re.escape(token[:-1]) + "(?:y|ies)"
    if not token[-1:].isalnum():
        return re.escape(token)
    return re.escape(token) + "(?:s|es)?"


@lru_cache(maxsize=4096)
def term_pattern(text: str) -> re.Pattern[str]:
    """Compile one keyword or phrase into a boundary-checked, case-insensitive regex."""
    tokens = [t for t in _SPLIT.split(text.strip()) if t]
    parts = [re.escape(t) for t in tokens[:-1]] + [_plural_forms(tokens[-1])]
    return re.compile(r"(?<!\w)" + _SEPARATOR.join(parts) + r"(?!\w)", re.IGNORECASE)


def normalise_name(name: str) -> str:
    """Author names compared whole: case, accents and punctuation do not count."""
    return " ".join(_NAME_PUNCT.sub(" ", fold_text(name)).split())


@dataclass(frozen=True)
class _CompiledTerm:
    text: str
    weight: float
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class CompiledWatchlist:
    settings: WatchlistSettings
    terms: tuple[_CompiledTerm, ...]
    exclusions: tuple[_CompiledTerm, ...]
    authors: dict[str, str]  # normalised -> as written in the watchlist
    categories: frozenset[str]

    @property
    def name(self) -> str:
        return self.settings.name


def compile_watchlist(settings: WatchlistSettings) -> CompiledWatchlist:
    def compiled(terms: Iterable[Term]) -> tuple[_CompiledTerm, ...]:
        return tuple(_CompiledTerm(t.text, t.weight, term_pattern(t.text)) for t in terms)

    return CompiledWatchlist(
        settings=settings,
        terms=compiled(settings.keywords),
        exclusions=compiled(Term(text) for text in settings.exclude),
        authors={normalise_name(a): a for a in settings.authors},
        categories=frozenset(settings.categories),
    )


def _term_points(weight: float, factor: float, count: int) -> float:
    return weight * factor * (1 + REPEAT_BONUS * min(count - 1, REPEAT_CAP))


def score(paper: Paper, watchlist: CompiledWatchlist) -> Match | None:
    """The paper's match against one watchlist, or None when it does not qualify."""
    for exclusion in watchlist.exclusions:
        if exclusion.pattern.search(paper.title) or exclusion.pattern.search(paper.abstract):
            return None
    reasons: list[Reason] = []
    if watchlist.categories:
        shared = [c for c in paper.categories if c in watchlist.categories]
        if not shared:
            return None
        only_categories = not watchlist.terms and not watchlist.authors
        points = CATEGORY_ONLY_POINTS if only_categories else 0.0
        reasons.append(Reason("category", shared[0], points=points))
    for term in watchlist.terms:
        for field, text, factor in (("title", paper.title, TITLE_FACTOR),
                                    ("abstract", paper.abstract, ABSTRACT_FACTOR)):
            count = len(term.pattern.findall(text))
            if count:
                reasons.append(Reason("term", term.text, field,
                                      _term_points(term.weight, factor, count), count))
    if watchlist.authors:
        for author in paper.authors:
            wanted = watchlist.authors.get(normalise_name(author))
            if wanted:
                reasons.append(Reason("author", author, "authors", AUTHOR_POINTS))
    total = round(sum(r.points for r in reasons), 4)
    if not any(r.points for r in reasons) or total < watchlist.settings.min_score:
        return None
    return Match(paper=paper, watchlist=watchlist.name, score=total, reasons=tuple(reasons))


def rank(matches: Iterable[Match]) -> list[Match]:
    """Highest score first; ties go to more upvotes, then to the paper key (stable)."""
    return sorted(matches, key=lambda m: (-m.score, -(m.paper.upvotes or 0), m.paper.key))


def select(papers: Iterable[Paper], watchlist: CompiledWatchlist) -> list[Match]:
    """The watchlist's ranked matches among ``papers``, at most ``max_papers`` of them."""
    matches = [m for p in papers if (m := score(p, watchlist)) is not None]
    return rank(matches)[: watchlist.settings.max_papers]


def highlight_spans(text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) spans of the given terms in ``text``, in order."""
    spans = sorted((m.start(), m.end()) for t in terms for m in term_pattern(t).finditer(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
