"""Watchlists compiled once into one matcher; each paper is scored with its reasons.

No I/O here. Every term of every watchlist goes into one Aho-Corasick automaton over
normalised text, so the cost of a paper grows with its length and its hits, not with
watchlists x terms. Only the watchlists a paper touches are scored.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import ahocorasick

from digest.config import AuthorRule, WatchlistSettings
from digest.models import Match, Paper, Reason, fold_text
from digest.similarity import SimilarityIndex, Vector, compare
from digest.terms import FIELDS, Term, evaluate, is_word_char, normalise, parse_term, query_terms

TITLE_FACTOR = 2.0  # a term in the title says more than the same term in the abstract
ABSTRACT_FACTOR = 1.0
FACTORS = {"title": TITLE_FACTOR, "abstract": ABSTRACT_FACTOR}
REPEAT_BONUS = 0.25  # each further occurrence in a field adds this share of the weight...
REPEAT_CAP = 2  # ...for at most this many further occurrences, so repeats saturate
AUTHOR_POINTS = 3.0
CATEGORY_ONLY_POINTS = 1.0
CROSS_LIST_SHARE = 0.5  # a category boost counts half for a cross-listed paper

_NAME_PUNCT = re.compile(r"[^\w\s]|_")


def normalise_name(name: str) -> str:
    """Author names compared whole: case, accents and punctuation do not count."""
    return " ".join(_NAME_PUNCT.sub(" ", fold_text(name)).split())


def _names_agree(wanted: list[str], author: list[str]) -> bool:
    """Same surname, and each given name equal or an initial of the other."""
    if len(wanted) != len(author) or wanted[-1] != author[-1]:
        return False
    for a, b in zip(wanted[:-1], author[:-1], strict=True):
        if a != b and not (len(a) == 1 and b.startswith(a)) and not (
                len(b) == 1 and a.startswith(b)):
            return False
    return True


def author_matches(rule: AuthorRule, author: str) -> bool:
    wanted, actual = normalise_name(rule.name), normalise_name(author)
    if wanted == actual:
        return True
    return rule.initials and _names_agree(wanted.split(), actual.split())


def term_points(weight: float, factor: float, count: int) -> float:
    return weight * factor * (1 + REPEAT_BONUS * min(count - 1, REPEAT_CAP))


@dataclass(frozen=True)
class Explanation:
    """A watchlist's verdict on a paper: its score, the parts of it, and why not, if not."""

    watchlist: str
    score: float
    reasons: tuple[Reason, ...]
    verdict: str = "match"

    @property
    def passed(self) -> bool:
        return self.verdict == "match"


@dataclass
class _Use:
    """One appearance of a term in a watchlist."""

    term: Term
    atom: int
    weight: float
    role: str  # keyword | query | exclude


@dataclass
class _Compiled:
    settings: WatchlistSettings
    uses: list[_Use] = field(default_factory=list)
    profile: Vector | None = None

    @property
    def name(self) -> str:
        return self.settings.name


@dataclass
class _Hits:
    """What one paper's text holds: occurrences per (term atom, field)."""

    counts: dict[tuple[int, str], int]

    def count(self, atom: int, restriction: str | None) -> dict[str, int]:
        fields = FIELDS if restriction is None else (restriction,)
        return {f: self.counts[(atom, f)] for f in fields if (atom, f) in self.counts}


class Matcher:
    """Every watchlist of a run, compiled together."""

    def __init__(
        self,
        watchlists: Sequence[WatchlistSettings],
        *,
        similarity: SimilarityIndex | None = None,
        seeds: dict[str, list[str]] | None = None,
    ) -> None:
        self.similarity = similarity
        self._atoms: dict[tuple[str, str], int] = {}
        self._atom_terms: list[Term] = []
        self._regexes: list[tuple[int, re.Pattern[str]]] = []
        self.watchlists: dict[str, _Compiled] = {}
        self._by_atom: dict[int, set[str]] = defaultdict(set)
        self._dense: set[str] = set()  # watchlists scored for every paper
        self._by_category: dict[str, set[str]] = defaultdict(set)
        self._by_author: dict[str, set[str]] = defaultdict(set)
        for settings in watchlists:
            compiled = _Compiled(settings)
            for keyword in settings.keywords:
                compiled.uses.append(_Use(keyword.term, self._atom(keyword.term),
                                          keyword.weight, "keyword"))
            keyword_keys = {(k.term.key, k.term.field) for k in settings.keywords}
            if settings.query is not None:
                for term, negated in query_terms(settings.query):
                    if negated or (term.key, term.field) not in keyword_keys:
                        compiled.uses.append(_Use(term, self._atom(term), 1.0,
                                                  "exclude-query" if negated else "query"))
            for term in settings.exclude:
                compiled.uses.append(_Use(term, self._atom(term), 0.0, "exclude"))
            for use in compiled.uses:
                if use.role in ("keyword", "query") and use.weight > 0:
                    self._by_atom[use.atom].add(settings.name)
            for rule in settings.authors:
                surname = normalise_name(rule.name).split()[-1]
                self._by_author[surname].add(settings.name)
            if settings.categories and not settings.keywords and settings.query is None:
                for category in settings.categories:
                    self._by_category[category].add(settings.name)
            if settings.similar_to and similarity is not None:
                texts = (seeds or {}).get(settings.name, [])
                if texts:
                    compiled.profile = similarity.profile(texts)
                    self._dense.add(settings.name)
            self.watchlists[settings.name] = compiled
        self._automaton = ahocorasick.Automaton()
        variants: dict[str, list[tuple[int, bool, int]]] = defaultdict(list)
        for atom, term in enumerate(self._atom_terms):
            if term.kind == "regex":
                self._regexes.append((atom, term.compiled()))
                continue
            for variant in term.variants():
                variants[variant].append((atom, term.kind == "prefix", len(variant)))
        for variant, entries in variants.items():
            self._automaton.add_word(variant, tuple(entries))
        if variants:
            self._automaton.make_automaton()
        self._empty = not variants

    def _atom(self, term: Term) -> int:
        if term.key not in self._atoms:
            self._atoms[term.key] = len(self._atom_terms)
            self._atom_terms.append(term)
        return self._atoms[term.key]

    # ----------------------------------------------------------------- text scanning

    def hits(self, paper: Paper) -> _Hits:
        counts: dict[tuple[int, str], int] = defaultdict(int)
        for field_name, raw in (("title", paper.title), ("abstract", paper.abstract)):
            text = normalise(raw)
            if not self._empty:
                length = len(text)
                for end, entries in self._automaton.iter(text):
                    for atom, is_prefix, size in entries:
                        start = end - size + 1
                        if start > 0 and is_word_char(text[start - 1]):
                            continue
                        if not is_prefix and end + 1 < length and is_word_char(text[end + 1]):
                            continue
                        counts[(atom, field_name)] += 1
            for atom, pattern in self._regexes:
                found = len(pattern.findall(raw))
                if found:
                    counts[(atom, field_name)] += found
        return _Hits(dict(counts))

    def touched(self, paper: Paper, hits: _Hits) -> set[str]:
        """The watchlists that have any reason to look at this paper."""
        names = set(self._dense)
        for atom, _ in hits.counts:
            names |= self._by_atom.get(atom, set())
        for author in paper.authors:
            parts = normalise_name(author).split()
            if parts:
                names |= self._by_author.get(parts[-1], set())
        for category in paper.categories:
            names |= self._by_category.get(category, set())
        return names

    # ----------------------------------------------------------------- scoring

    def explain(self, paper: Paper, *, now: datetime,
                names: Iterable[str] | None = None) -> list[Explanation]:
        """The verdict of each watchlist (all of them unless ``names`` says)."""
        hits = self.hits(paper)
        vector = self._vector(paper)
        chosen = self.watchlists if names is None else {n: self.watchlists[n] for n in names}
        return [self._score(paper, hits, vector, w, now) for w in chosen.values()]

    def match(self, paper: Paper, *, now: datetime,
              names: Iterable[str] | None = None) -> list[Match]:
        """The watchlists this paper qualifies for, among ``names`` (or all)."""
        hits = self.hits(paper)
        touched = self.touched(paper, hits)
        if names is not None:
            touched &= set(names)
        vector = self._vector(paper) if touched & self._dense else None
        out = []
        for name in sorted(touched):
            explanation = self._score(paper, hits, vector, self.watchlists[name], now)
            if explanation.passed:
                out.append(Match(paper=paper, watchlist=name, score=explanation.score,
                                 reasons=explanation.reasons))
        return out

    def select(self, papers: Iterable[Paper], name: str, *, now: datetime) -> list[Match]:
        """One watchlist's ranked matches among ``papers``, at most ``max_papers``."""
        matches = [m for p in papers for m in self.match(p, now=now, names=[name])]
        return rank(matches)[: self.watchlists[name].settings.max_papers]

    def _vector(self, paper: Paper) -> Vector | None:
        if self.similarity is None or not self._dense:
            return None
        return self.similarity.vector(f"{paper.title}. {paper.abstract}")

    def _score(self, paper: Paper, hits: _Hits, vector: Vector | None, w: _Compiled,
               now: datetime) -> Explanation:
        s = w.settings
        reasons: list[Reason] = []

        def verdict(text: str) -> Explanation:
            return Explanation(w.name, round(sum(r.points for r in reasons), 4),
                               tuple(reasons), text)

        for use in w.uses:
            if use.role == "exclude":
                found = hits.count(use.atom, use.term.field)
                if found:
                    where = " and ".join(found)
                    return verdict(f'vetoed by exclusion "{use.term.text}" in {where}')
        if s.categories:
            listed = ((paper.primary_category or (paper.categories[:1] or [None])[0],)
                      if s.primary_only else paper.categories)
            shared = [c for c in listed if c in s.categories]
            if not shared:
                which = "primary category" if s.primary_only else "categories"
                return verdict(f"{which} {', '.join(c for c in listed if c) or 'none'} not in "
                               f"{', '.join(s.categories)}")
            only = not s.keywords and s.query is None and not s.authors and not s.similar_to
            reasons.append(Reason("category", shared[0],
                                  points=CATEGORY_ONLY_POINTS if only else 0.0))
        if s.query is not None:
            matched = {u.term for u in w.uses if u.role in ("query", "exclude-query", "keyword")
                       and hits.count(u.atom, u.term.field)}
            if not evaluate(s.query, matched):
                return verdict(f"query not satisfied: {s.query_text}")
        for use in w.uses:
            if use.role not in ("keyword", "query"):
                continue
            for field_name, count in hits.count(use.atom, use.term.field).items():
                points = term_points(use.weight, FACTORS[field_name], count)
                kind = "term" if use.weight > 0 else "negative"
                reasons.append(Reason(kind, use.term.text, field_name, round(points, 4), count,
                                      use.weight))
        for rule in s.authors:
            for author in paper.authors:
                if author_matches(rule, author):
                    reasons.append(Reason("author", author, "authors", AUTHOR_POINTS))
                    break
        if w.profile is not None and vector is not None:
            similarity, shared_terms = compare(w.profile, vector)
            if similarity >= s.min_similarity:
                reasons.append(Reason("similar", ", ".join(shared_terms), "text",
                                      round(s.similarity_weight * similarity, 4)))
        evidence = any(r.points > 0 for r in reasons)
        if not evidence:
            return verdict("no term, author, category or seed matched")
        reasons.extend(_boosts(paper, s, now))
        total = round(sum(r.points for r in reasons), 4)
        if total < s.min_score:
            return verdict(f"score {total:g} below min_score {s.min_score:g}")
        return Explanation(w.name, total, tuple(reasons))


def _boosts(paper: Paper, s: WatchlistSettings, now: datetime) -> list[Reason]:
    boosts = []
    if s.category_boost:
        primary = paper.primary_category or (paper.categories[0] if paper.categories else None)
        if primary in s.category_boost:
            boosts.append(Reason("boost", f"{primary} (primary)", "category",
                                 s.category_boost[primary]))
        else:
            cross = [c for c in paper.categories if c in s.category_boost]
            if cross:
                boosts.append(Reason("boost", f"{cross[0]} (cross-listed)", "category",
                                     round(s.category_boost[cross[0]] * CROSS_LIST_SHARE, 4)))
    if s.upvotes_boost and paper.upvotes:
        boosts.append(Reason("boost", f"▲ {paper.upvotes} upvotes", "upvotes",
                             round(s.upvotes_boost * math.log10(1 + paper.upvotes), 4)))
    if s.recency_boost and paper.published:
        age = max(0.0, (now - paper.published).total_seconds() / 86400)
        boosts.append(Reason("boost", f"published {age:.1f} days ago", "recency",
                             round(s.recency_boost * 0.5 ** (age / s.recency_half_life_days),
                                   4)))
    return boosts


def rank(matches: Iterable[Match]) -> list[Match]:
    """Highest score first; ties go to more upvotes, then to the paper key (stable)."""
    return sorted(matches, key=lambda m: (-m.score, -(m.paper.upvotes or 0), m.paper.key))


def highlight_spans(text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) spans of the given terms in ``text``, in order."""
    spans = []
    for written in terms:
        try:
            pattern = parse_term(written).compiled()
        except ValueError:
            continue
        spans += [(m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start()]
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
