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
from digest.terms import Term, evaluate, parse_term, query_terms, word_text

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


@dataclass(frozen=True, slots=True)
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
    role: str  # keyword | query | exclude | exclude-query
    order: int = 0  # position in the watchlist, so reasons keep the order written


@dataclass
class _Compiled:
    settings: WatchlistSettings
    uses: list[_Use] = field(default_factory=list)
    profile: Vector | None = None
    plain: bool = False  # keywords only: scored on the short path

    def __post_init__(self) -> None:
        s = self.settings
        self.plain = not (s.exclude or s.categories or s.query is not None or s.authors
                          or s.similar_to or s.category_boost or s.upvotes_boost
                          or s.recency_boost)

    @property
    def name(self) -> str:
        return self.settings.name


@dataclass
class _Hits:
    """What one paper's text holds: occurrences per term atom, per field."""

    by_atom: dict[int, dict[str, int]]

    def count(self, atom: int, restriction: str | None) -> dict[str, int]:
        fields = self.by_atom.get(atom)
        if not fields or restriction is None:
            return fields or {}
        return {restriction: fields[restriction]} if restriction in fields else {}


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
        self._postings: dict[int, list[tuple[str, _Use]]] = defaultdict(list)
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
            for order, use in enumerate(compiled.uses):
                use.order = order
            for use in compiled.uses:
                self._postings[use.atom].append((settings.name, use))
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
        variants: dict[str, list[int]] = defaultdict(list)
        for atom, term in enumerate(self._atom_terms):
            if not term.wordy:  # regexes, and terms with symbols such as C++
                self._regexes.append((atom, term.compiled()))
                continue
            for variant in term.variants():
                # ' word ' in word_text() is a whole word; a prefix leaves the end open
                key = f" {variant}" if term.kind == "prefix" else f" {variant} "
                variants[key].append(atom)
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
        by_atom: dict[int, dict[str, int]] = {}
        for field_name, raw in (("title", paper.title), ("abstract", paper.abstract)):
            if not self._empty:
                for _, atoms in self._automaton.iter(word_text(raw)):
                    for atom in atoms:
                        fields = by_atom.setdefault(atom, {})
                        fields[field_name] = fields.get(field_name, 0) + 1
            for atom, pattern in self._regexes:
                found = len(pattern.findall(raw))
                if found:
                    fields = by_atom.setdefault(atom, {})
                    fields[field_name] = fields.get(field_name, 0) + found
        return _Hits(by_atom)

    def _hit_uses(self, hits: _Hits) -> dict[str, list[_Use]]:
        """For each watchlist, the uses of its terms that this paper's text contains."""
        out: dict[str, list[_Use]] = defaultdict(list)
        for atom, fields in hits.by_atom.items():
            for name, use in self._postings.get(atom, ()):
                if use.term.field is None or use.term.field in fields:
                    out[name].append(use)
        return out

    def touched(self, paper: Paper, hits: _Hits) -> set[str]:
        """The watchlists that have any reason to look at this paper."""
        names = set(self._dense)
        for atom in hits.by_atom:
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
        hit_uses = self._hit_uses(hits)
        vector = self._vector(paper)
        chosen = self.watchlists if names is None else {n: self.watchlists[n] for n in names}
        return [self._score(paper, hits, hit_uses.get(w.name, []), vector, w, now)
                for w in chosen.values()]

    def match(self, paper: Paper, *, now: datetime,
              names: Iterable[str] | None = None) -> list[Match]:
        """The watchlists this paper qualifies for, among ``names`` (or all)."""
        hits = self.hits(paper)
        touched = self.touched(paper, hits)
        if names is not None:
            touched &= set(names)
        if not touched:
            return []
        hit_uses = self._hit_uses(hits)
        vector = self._vector(paper) if touched & self._dense else None
        out = []
        for name in sorted(touched):
            explanation = self._score(paper, hits, hit_uses.get(name, []), vector,
                                      self.watchlists[name], now)
            if explanation.passed:
                out.append(Match(paper=paper, watchlist=name, score=explanation.score,
                                 reasons=explanation.reasons))
        return out

    def match_many(self, papers: Iterable[Paper], *, now: datetime,
                   names: Iterable[str] | None = None) -> dict[str, list[Match]]:
        """Every paper against every watchlist (or ``names``), in one pass over the papers."""
        wanted = None if names is None else list(names)
        out: dict[str, list[Match]] = {name: [] for name in (wanted or self.watchlists)}
        for paper in papers:
            for match in self.match(paper, now=now, names=wanted):
                out[match.watchlist].append(match)
        return out

    def _vector(self, paper: Paper) -> Vector | None:
        if self.similarity is None or not self._dense:
            return None
        return self.similarity.vector(f"{paper.title}. {paper.abstract}")

    def _score(self, paper: Paper, hits: _Hits, hit_uses: list[_Use], vector: Vector | None,
               w: _Compiled, now: datetime) -> Explanation:
        if w.plain:
            return _score_keywords(hits, hit_uses, w)
        s = w.settings
        reasons: list[Reason] = []
        evidence = False

        def verdict(text: str) -> Explanation:
            return Explanation(w.name, round(sum(r.points for r in reasons), 4),
                               tuple(reasons), text)

        if len(hit_uses) > 1:
            hit_uses = sorted(hit_uses, key=_by_order)
        for use in hit_uses:
            if use.role == "exclude":
                where = " and ".join(hits.count(use.atom, use.term.field))
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
            evidence = only
        if s.query is not None:
            matched = {(u.term.key, u.term.field) for u in hit_uses
                       if u.role in ("query", "exclude-query", "keyword")}
            if not evaluate(s.query, matched):
                return verdict(f"query not satisfied: {s.query_text}")
        for use in hit_uses:
            if use.role != "keyword" and use.role != "query":
                continue
            kind = "term" if use.weight > 0 else "negative"
            evidence = evidence or use.weight > 0
            for field_name, count in hits.count(use.atom, use.term.field).items():
                repeats = count - 1 if count <= REPEAT_CAP else REPEAT_CAP
                points = use.weight * FACTORS[field_name] * (1 + REPEAT_BONUS * repeats)
                reasons.append(Reason(kind, use.term.text, field_name, round(points, 4), count,
                                      use.weight))
        for rule in s.authors:
            for author in paper.authors:
                if author_matches(rule, author):
                    reasons.append(Reason("author", author, "authors", AUTHOR_POINTS))
                    evidence = True
                    break
        if w.profile is not None and vector is not None:
            similarity, shared_terms = compare(w.profile, vector)
            if similarity >= s.min_similarity and s.similarity_weight > 0:
                reasons.append(Reason("similar", ", ".join(shared_terms), "text",
                                      round(s.similarity_weight * similarity, 4)))
                evidence = True
        if not evidence:
            return verdict("no term, author, category or seed matched")
        if s.category_boost or s.upvotes_boost or s.recency_boost:
            reasons.extend(_boosts(paper, s, now))
        total = round(sum(r.points for r in reasons), 4)
        if total < s.min_score:
            return verdict(f"score {total:g} below min_score {s.min_score:g}")
        return Explanation(w.name, total, tuple(reasons))


def _by_order(use: _Use) -> int:
    return use.order


def _score_keywords(hits: _Hits, hit_uses: list[_Use], w: _Compiled) -> Explanation:
    """The short path for a watchlist of keywords alone; the same result as the long one."""
    if len(hit_uses) > 1:
        hit_uses = sorted(hit_uses, key=_by_order)
    reasons = []
    total = 0.0
    evidence = False
    for use in hit_uses:
        weight = use.weight
        kind = "term" if weight > 0 else "negative"
        evidence = evidence or weight > 0
        fields = hits.by_atom[use.atom]
        for field_name in (use.term.field,) if use.term.field else fields:
            count = fields.get(field_name, 0)
            if not count:
                continue
            repeats = count - 1 if count <= REPEAT_CAP else REPEAT_CAP
            points = round(weight * FACTORS[field_name] * (1 + REPEAT_BONUS * repeats), 4)
            total += points
            reasons.append(Reason(kind, use.term.text, field_name, points, count, weight))
    total = round(total, 4)
    if not evidence:
        return Explanation(w.name, total, tuple(reasons),
                           "no term, author, category or seed matched")
    if total < w.settings.min_score:
        return Explanation(w.name, total, tuple(reasons),
                           f"score {total:g} below min_score {w.settings.min_score:g}")
    return Explanation(w.name, total, tuple(reasons))


def _boosts(paper: Paper, s: WatchlistSettings, now: datetime) -> list[Reason]:
    boosts = []
    if s.category_boost:
        primary = paper.primary_category or (paper.categories[0] if paper.categories else None)
        if primary is not None and primary in s.category_boost:
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
