"""Watchlists compiled once into one matcher; each paper is scored with its reasons.

No I/O here. Every term of every watchlist goes into one Aho-Corasick automaton over
normalised text, so the cost of a paper grows with its length and its hits, not with
watchlists x terms. Only the watchlists a paper touches are scored.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path

import ahocorasick
import numpy as np

from digest.config import AuthorRule, WatchlistSettings
from digest.models import Match, Paper, Reason, fold_text
from digest.ranking import Closest, ModelSet, WatchlistModel, featurize
from digest.similarity import Profiles, SimilarityIndex, Vector, centroid
from digest.terms import (
    MARK,
    NormalText,
    Reading,
    Term,
    Vocabulary,
    evaluate,
    fold_word,
    inflections,
    parse_term,
    places_apart,
    query_terms,
    spells,
)

TITLE_FACTOR = 2.0  # a term in the title says more than the same term in the abstract
ABSTRACT_FACTOR = 1.0
FACTORS = {"title": TITLE_FACTOR, "abstract": ABSTRACT_FACTOR}
FIELD_ORDER = {"title": 0, "abstract": 1}
REPEAT_BONUS = 0.25  # each further occurrence in a field adds this share of the weight...
REPEAT_CAP = 2  # ...for at most this many further occurrences, so repeats saturate
AUTHOR_POINTS = 3.0
CATEGORY_ONLY_POINTS = 1.0
CROSS_LIST_SHARE = 0.5  # a category boost counts half for a cross-listed paper
# Alone, without a term, author, category or seed, the ratings must say more than "rather
# liked" to send a paper: this share of feedback_weight at least (P(liked) >= 0.75).
LEARNED_ALONE = 0.5
# A watchlist with terms, authors or seeds of its own has said what it looks for, and none
# of it matched: the ratings must be surer to send the paper past its rules (P >= 0.85),
# and surer still where the model's surest held-out papers were not mostly liked.
LEARNED_PAST_RULES = 0.7
# An acronym's long form said in other forms of its words: each word begins with this
# many letters of the watchlist's or more (low-rank adapters for low-rank adaptation).
AKIN_PREFIX = 5
REACH_SLACK = 1e-3  # points are rounded to 4 decimals: a bound on them keeps this margin

_NAME_PUNCT = re.compile(r"[^\w\s]|_")


@cache
def _code_version() -> str:
    """The source of the modules a verdict comes from, and the versions of the word lists
    they read: a match kept by other code is scored again."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in [here / "scoring.py", here / "terms.py", here / "similarity.py",
                 here / "models.py", *sorted((here / "ranking").glob("*.py"))]:
        digest.update(path.read_bytes())
    for package in ("inflect", "breame", "pyahocorasick"):
        try:
            digest.update(f"{package} {metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(package.encode())
    return digest.hexdigest()


@lru_cache(maxsize=1 << 16)
def normalise_name(name: str) -> str:
    """Author names compared whole: case, accents and punctuation do not count.

    Cached: a day's few thousand names are each compared with every author rule.
    """
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
    plain: bool = False  # keywords only: scored on the short path
    learned: bool = False  # a model trained on its ratings adds its points
    disliked: frozenset[str] = frozenset()  # papers a reader disliked for it: never sent
    liked: frozenset[str] = frozenset()  # liked or saved: its reader has them, not sent again
    # what a paper's words are compared with: "text" (its seeds, similar_to) or "likes"
    # (a ratings-only watchlist's liked papers); "" for neither
    alike_to: str = ""
    alike_keys: frozenset[str] = frozenset()  # those papers: not "like" themselves
    alike_texts: str = ""  # a digest of their texts: the profile is theirs, weighed
    ratings_only: bool = False  # no terms, authors or seeds: its likes are all it has
    # its terms written as acronyms (ASR), each with the atoms of its terms that could be
    # what it stands for (speech recognition): a paper that defines it otherwise means
    # something else by it
    meanings: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # the words of those terms, folded, to know them in other forms ("low-rank adapters")
    meaning_words: dict[int, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.plain = not (s.exclude or s.categories or s.query is not None or s.authors
                          or s.similar_to or s.category_boost or s.upvotes_boost
                          or s.recency_boost or self.learned or self.disliked
                          or self.liked)
        self.ratings_only = s.ratings_only

    @property
    def name(self) -> str:
        return self.settings.name


# For each watchlist whose seeds or likes a paper is like: the likeness, and the shared
# words that count most in it.
Alike = dict[str, tuple[float, tuple[str, ...]]]
Span = tuple[int, int]  # first and last character of a place in a field's normal form


@dataclass
class _Hits:
    """What one paper's text holds: the places each term atom covers, per field."""

    by_atom: dict[int, dict[str, list[Span]]]
    texts: dict[str, NormalText] = field(default_factory=dict)

    def spans(self, atom: int, restriction: str | None) -> dict[str, list[Span]]:
        fields = self.by_atom.get(atom)
        if not fields or restriction is None:
            return fields or {}
        return {restriction: fields[restriction]} if restriction in fields else {}

    def count(self, atom: int, restriction: str | None) -> dict[str, int]:
        return {name: len(spans) for name, spans in self.spans(atom, restriction).items()}


class _Learned:
    """What the models make of a batch of papers: every paper x model lean, computed at once.

    The nearest rated paper is looked up per model for the papers that need a reason; a
    batch fills those in one sparse product per model (``prefetch``).
    """

    def __init__(self, models: ModelSet, papers: Sequence[Paper]) -> None:
        self.models = models
        self.rows = featurize(papers)
        self.leans = models.lean(self.rows)
        self._closest: dict[tuple[int, str], Closest | None] = {}

    def lean(self, row: int, name: str) -> float:
        return float(self.leans[row, self.models.column[name]])

    def prefetch(self, wanted: Mapping[str, Sequence[int]]) -> None:
        found = self.models.closest(self.rows, self.leans, wanted)
        for name, rows in wanted.items():
            for row in rows:
                self._closest[(row, name)] = found.get((row, name))

    def closest(self, row: int, name: str) -> Closest | None:
        if (row, name) not in self._closest:
            self.prefetch({name: [row]})
        return self._closest[(row, name)]


class Matcher:
    """Every watchlist of a run, compiled together."""

    def __init__(
        self,
        watchlists: Sequence[WatchlistSettings],
        *,
        similarity: SimilarityIndex | None = None,
        seeds: dict[str, list[str]] | None = None,
        seed_keys: Mapping[str, Iterable[str]] | None = None,
        models: Mapping[str, WatchlistModel] | None = None,
        ratings: Mapping[str, Mapping[str, int]] | None = None,
        liked: Mapping[str, Mapping[str, str]] | None = None,
        similarity_taken: str = "",
    ) -> None:
        """``models`` are the watchlists' trained models; ``ratings`` their rated papers
        (+1 liked, -1 disliked), so that no rated paper is sent to its watchlist again.
        ``seed_keys`` names the stored papers among each watchlist's ``seeds``; ``liked``
        the texts of a ratings-only watchlist's liked papers, by key: it compares each
        paper with them as similar_to does with seeds. ``similarity_taken`` names the
        word counts ``similarity`` holds: verdicts kept under others are scored again."""
        self.similarity = similarity
        self.similarity_taken = similarity_taken
        self._atoms: dict[tuple[str, str], int] = {}
        self._atom_terms: list[Term] = []
        self._regexes: list[Term] = []
        self.watchlists: dict[str, _Compiled] = {}
        self._by_atom: dict[int, set[str]] = defaultdict(set)
        self._postings: dict[int, list[tuple[str, _Use]]] = defaultdict(list)
        # watchlists that compare a paper's words with papers' (seeds, likes): their
        # profiles, and the least likeness that counts
        self._profiles = Profiles()
        vectors: dict[str, Vector] = {}  # liked papers, shared by watchlists that liked them
        self._by_category: dict[str, set[str]] = defaultdict(set)
        self._by_author: dict[str, set[str]] = defaultdict(set)
        models = models or {}
        self._ratings = ratings or {}
        for settings in watchlists:
            rated = (ratings or {}).get(settings.name, {})
            compiled = _Compiled(settings,
                                 learned=settings.feedback_weight > 0 and settings.name in models,
                                 disliked=frozenset(k for k, v in rated.items() if v < 0),
                                 liked=frozenset(k for k, v in rated.items() if v > 0))
            for keyword in settings.keywords:
                compiled.uses.append(_Use(keyword.term, self._atom(keyword.term),
                                          keyword.weight, "keyword"))
            keyword_keys = {(k.term.key, k.term.field) for k in settings.keywords}
            # The query is a gate and adds nothing, unless nothing else could score: then
            # what it matched scores as keywords of weight 1, so its papers still rank.
            query_weight = 0.0 if (settings.keywords or settings.authors
                                   or settings.similar_to) else 1.0
            if settings.query is not None:
                for term, negated in query_terms(settings.query):
                    if negated or (term.key, term.field) not in keyword_keys:
                        compiled.uses.append(_Use(term, self._atom(term), query_weight,
                                                  "exclude-query" if negated else "query"))
            for term in settings.exclude:
                compiled.uses.append(_Use(term, self._atom(term), 0.0, "exclude"))
            for order, use in enumerate(compiled.uses):
                use.order = order
            compiled.meanings = _meanings(compiled.uses)
            terms = {use.atom: use.term for use in compiled.uses}
            compiled.meaning_words = {
                atom: tuple(tuple(fold_word(t.casefold()) for t in terms[other].tokens)
                            for other in meant)
                for atom, meant in compiled.meanings.items()}
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
            profile: Vector | None = None
            if settings.similar_to and similarity is not None:
                texts = (seeds or {}).get(settings.name, [])
                if texts:
                    profile = similarity.profile(texts)
                    compiled.alike_texts = _digest_of(texts)
                    compiled.alike_to = "text"
                    compiled.alike_keys = frozenset((seed_keys or {}).get(settings.name, ()))
            texts_liked = (liked or {}).get(settings.name)
            if (texts_liked and similarity is not None and settings.feedback_weight > 0
                    and compiled.ratings_only):  # its likes are all it has to find papers by
                for key, text in texts_liked.items():
                    if key not in vectors:
                        vectors[key] = similarity.vector(text)
                profile = centroid(vectors[key] for key in texts_liked)
                compiled.alike_texts = _digest_of(f"{k}\t{t}" for k, t in texts_liked.items())
                compiled.alike_to = "likes"
                compiled.alike_keys = frozenset(texts_liked)
                compiled.plain = False
            if profile is not None and settings.similarity_weight > 0:
                self._profiles.add(settings.name, profile, settings.min_similarity)
            self.watchlists[settings.name] = compiled
        self.learning = ModelSet({w.name: models[w.name] for w in self.watchlists.values()
                                  if w.learned})
        # A model alone makes a paper worth scoring when its points could reach min_score,
        # or with a boost, when they could be enough to send it (LEARNED_ALONE at least).
        self._lean_floor = np.array([_lean_floor(self.watchlists[n].settings)
                                     for n in self.learning.names])
        self._learn_names = np.array(self.learning.names, dtype=object)
        # Likeness alone makes a paper worth scoring when its points, with the most its
        # model could add, could reach min_score: what else a paper so found can score is
        # nothing (its terms, authors and categories would have found it themselves) or
        # less (a lean against it, a term that lowers), boosts aside. For each watchlist
        # without boosts: similarity_weight, feedback_weight, its model's column, min_score.
        self._reach: dict[str, tuple[float, float, int | None, float]] = {}
        for name in self._profiles.names:
            s = self.watchlists[name].settings
            if not (s.category_boost or s.upvotes_boost or s.recency_boost):
                column = self.learning.column.get(name)
                self._reach[name] = (s.similarity_weight, s.feedback_weight, column,
                                     s.min_score)
        self._automaton = ahocorasick.Automaton()
        variants: dict[str, list[int]] = defaultdict(list)
        for atom, term in enumerate(self._atom_terms):
            if term.on_raw_text:  # regexes, and terms with symbols such as C++
                self._regexes.append(term)
                continue
            for variant in term.variants():
                # ' word ' in the normal form is a whole word; a prefix leaves the end open
                key = f" {variant}" if term.kind == "prefix" else f" {variant} "
                variants[key].append(atom)
        for variant, entries in variants.items():
            # Where a hit's first and last characters are, counted back from where it ends
            # (the spaces around a whole word are not part of it).
            back = (len(variant) - 2, 1 if variant.endswith(" ") else 0)
            self._automaton.add_word(variant, (back, tuple(entries)))
        # Only where a text's hyphenated words could read as one of these is it read again.
        self._vocabulary = Vocabulary(self._atom_terms)
        if variants:
            self._automaton.make_automaton()
        self._empty = not variants

    def fingerprint(self, name: str) -> str:
        """What a watchlist's verdicts depend on besides the paper: its definition as
        scoring reads it, its model, its ratings, the texts of its seeds or likes and the
        word counts they are weighed by, and the scoring code itself. Matches kept under
        the same fingerprint are what scoring again would give."""
        w = self.watchlists[name]
        definition = replace(w.settings, channels=(), max_papers=0, schedule=None,
                             timezone=None, heartbeat=False, previous_names=())
        digest = hashlib.sha256(_code_version().encode())
        digest.update(repr(definition).encode())
        if w.learned:
            model = self.learning.models[name]
            digest.update(model.index.tobytes())
            digest.update(model.weights.tobytes())
            digest.update(repr(model.intercept).encode())
        rated = self._ratings.get(name, {})
        digest.update("\n".join(f"{k}\t{v}" for k, v in sorted(rated.items())).encode())
        if w.alike_to:  # what its seeds or likes are, and the word counts that weigh them
            digest.update(f"{w.alike_to}\n{w.alike_texts}\n{self.similarity_taken}".encode())
        return digest.hexdigest()[:32]

    def volatile(self, name: str) -> bool:
        """Whether a watchlist's verdict on a paper can change with nothing changed but the
        day (a recency boost): such a watchlist is scored over the whole window every run.
        Likeness to seeds or likes is weighed by word counts taken at one moment, which
        its fingerprint names (see ``Store.term_weights``)."""
        return bool(self.watchlists[name].settings.recency_boost)

    def _atom(self, term: Term) -> int:
        if term.key not in self._atoms:
            self._atoms[term.key] = len(self._atom_terms)
            self._atom_terms.append(term)
        return self._atoms[term.key]

    # ----------------------------------------------------------------- text scanning

    def hits(self, paper: Paper) -> _Hits:
        by_atom: dict[int, dict[str, list[Span]]] = {}
        texts = {}
        for field_name, raw in (("title", paper.title), ("abstract", paper.abstract)):
            text = texts[field_name] = NormalText(raw)
            if not self._empty:
                for end, ((to_first, to_last), atoms) in self._automaton.iter(text.text):
                    span = (end - to_first, end - to_last)
                    for atom in atoms:
                        by_atom.setdefault(atom, {}).setdefault(field_name, []).append(span)
                readings = text.readings(self._vocabulary)
                if readings:
                    self._read_compounds(text, readings, field_name, by_atom)
            for term in self._regexes:
                spans = [text.char_span(*words) for words in term.spans(text)]
                if spans:
                    by_atom.setdefault(self._atoms[term.key], {}).setdefault(
                        field_name, []).extend(spans)
        return _Hits(by_atom, texts)

    def _read_compounds(self, text: NormalText, readings: list[Reading], field_name: str,
                        by_atom: dict[int, dict[str, list[Span]]]) -> None:
        """The hits that only the other readings of hyphenated words hold (pretraining in
        pre-training, 4-bit in 4- and 8-bit), each once, at the words it stands for."""
        found: dict[int, list[Span]] = defaultdict(list)
        for reading in readings:
            for end, ((to_first, to_last), atoms) in self._automaton.iter(reading.text):
                words = reading.words_of(end - to_first, end - to_last)
                if words is not None:
                    span = text.char_span(*words)
                    for atom in atoms:
                        found[atom].append(span)
        for atom, more in found.items():
            spans = by_atom.setdefault(atom, {}).setdefault(field_name, [])
            spans += places_apart(spans, more)

    def _hit_uses(self, hits: _Hits) -> dict[str, list[_Use]]:
        """For each watchlist, the uses of its terms that this paper's text contains."""
        out: dict[str, list[_Use]] = defaultdict(list)
        for atom, fields in hits.by_atom.items():
            for name, use in self._postings.get(atom, ()):
                if use.term.field is None or use.term.field in fields:
                    out[name].append(use)
        return out

    def touched(self, paper: Paper, hits: _Hits, learned: _Learned | None = None,
                row: int = 0) -> set[str]:
        """The watchlists that have any reason to look at this paper."""
        return self._looked_at(paper, hits, learned, row)[0]

    def _looked_at(self, paper: Paper, hits: _Hits, learned: _Learned | None,
                   row: int) -> tuple[set[str], Alike]:
        """The watchlists that have any reason to look at this paper, and its likeness to
        the seeds or likes of those among them that compare it (see ``_alike``)."""
        names: set[str] = set()
        if learned is not None and len(self._learn_names):
            names.update(self._learn_names[learned.leans[row] >= self._lean_floor])
        for atom in hits.by_atom:
            names |= self._by_atom.get(atom, set())
        for author in paper.authors:
            parts = normalise_name(author).split()
            if parts:
                names |= self._by_author.get(parts[-1], set())
        for category in paper.categories:
            names |= self._by_category.get(category, set())

        def reaches(name: str, similarity: float) -> bool:
            reach = self._reach.get(name)
            if name in names or reach is None:
                return True
            weight, feedback, column, least = reach
            lean = (float(learned.leans[row, column])
                    if column is not None and learned is not None else 0.0)
            return weight * similarity + feedback * max(lean, 0.0) >= least - REACH_SLACK

        alike = self._alike(paper, reaches)
        names.update(alike)
        return names, alike

    # ----------------------------------------------------------------- scoring

    def explain(self, paper: Paper, *, now: datetime,
                names: Iterable[str] | None = None) -> list[Explanation]:
        """The verdict of each watchlist (all of them unless ``names`` says)."""
        hits = self.hits(paper)
        hit_uses = self._hit_uses(hits)
        alike = self._alike(paper)
        learned = self._learn([paper])
        chosen = self.watchlists if names is None else {n: self.watchlists[n] for n in names}
        return [self._score(paper, hits, hit_uses.get(w.name, []), alike, w, now, learned)
                for w in chosen.values()]

    def match(self, paper: Paper, *, now: datetime,
              names: Iterable[str] | None = None) -> list[Match]:
        """The watchlists this paper qualifies for, among ``names`` (or all)."""
        hits = self.hits(paper)
        learned = self._learn([paper])
        touched, alike = self._looked_at(paper, hits, learned, 0)
        if names is not None:
            touched &= set(names)
        return self._match(paper, hits, touched, now, learned, 0, alike)

    def _match(self, paper: Paper, hits: _Hits, touched: set[str], now: datetime,
               learned: _Learned | None, row: int, alike: Alike) -> list[Match]:
        if not touched:
            return []
        hit_uses = self._hit_uses(hits)
        out = []
        for name in sorted(touched):
            explanation = self._score(paper, hits, hit_uses.get(name, []), alike,
                                      self.watchlists[name], now, learned, row)
            if explanation.passed:
                out.append(Match(paper=paper, watchlist=name, score=explanation.score,
                                 reasons=explanation.reasons))
        return out

    def match_many(self, papers: Iterable[Paper], *, now: datetime,
                   names: Iterable[str] | None = None) -> dict[str, list[Match]]:
        """Every paper against every watchlist (or ``names``), in one pass over the papers.

        With models, every paper x model lean comes from one sparse product, and the
        nearest rated papers from one product per model, before the papers are scored.
        """
        wanted = None if names is None else list(names)
        out: dict[str, list[Match]] = {name: [] for name in (wanted or self.watchlists)}
        papers = list(papers)
        learned = self._learn(papers)
        scanned = []
        nearest: dict[str, list[int]] = defaultdict(list)
        for row, paper in enumerate(papers):
            hits = self.hits(paper)
            touched, alike = self._looked_at(paper, hits, learned, row)
            if wanted is not None:
                touched &= set(wanted)
            scanned.append((hits, touched, alike))
            for name in touched:
                if self.watchlists[name].learned:
                    nearest[name].append(row)
        if learned is not None:
            learned.prefetch(nearest)
        for row, (paper, (hits, touched, alike)) in enumerate(zip(papers, scanned,
                                                                  strict=True)):
            for match in self._match(paper, hits, touched, now, learned, row, alike):
                out[match.watchlist].append(match)
        return out

    def _learn(self, papers: Sequence[Paper]) -> _Learned | None:
        return _Learned(self.learning, papers) if self.learning else None

    def _alike(self, paper: Paper, keep: Callable[[str, float], bool] | None = None) -> Alike:
        """The watchlists whose seeds or likes this paper is alike to, at or above their
        min_similarity, and that ``keep`` keeps given the likeness: the likeness, and the
        words that count most in it."""
        if self.similarity is None or not self._profiles:
            return {}
        return self._profiles.alike(self.similarity.vector(f"{paper.title}. {paper.abstract}"),
                                    keep)

    def _score(self, paper: Paper, hits: _Hits, hit_uses: list[_Use], alike: Alike,
               w: _Compiled, now: datetime, learned: _Learned | None = None,
               row: int = 0) -> Explanation:
        other_meanings: list[str] = []
        if w.meanings and hit_uses:
            hit_uses, other_meanings = _meant(hits, hit_uses, w)
        if w.plain:
            return _score_keywords(hits, hit_uses, w, other_meanings)
        s = w.settings
        reasons: list[Reason] = []
        evidence = False

        def verdict(text: str) -> Explanation:
            if other_meanings and text.startswith("no term"):
                text += "; " + "; ".join(other_meanings)
            return Explanation(w.name, round(sum(r.points for r in reasons), 4),
                               tuple(reasons), text)

        if paper.key in w.disliked:
            return verdict("disliked by a reader for this watchlist")
        if paper.key in w.liked:
            return verdict("liked by a reader for this watchlist, who has it already")
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
                named = ", ".join(c for c in listed if c)
                return verdict(f"{which} {named} not in {', '.join(s.categories)}" if named
                               else f"no {which} known, and only {', '.join(s.categories)} "
                               "may pass")
            only = not s.keywords and s.query is None and not s.authors and not s.similar_to
            reasons.append(Reason("category", shared[0],
                                  points=CATEGORY_ONLY_POINTS if only else 0.0))
            evidence = only
        if s.query is not None:
            matched = {(u.term.key, u.term.field) for u in hit_uses
                       if u.role in ("query", "exclude-query", "keyword")}
            if not evaluate(s.query, matched):
                return verdict(f"query not satisfied: {s.query_text}")
        terms = _term_reasons(hits, hit_uses)
        reasons += terms
        evidence = evidence or any(r.points > 0 for r in terms)
        for rule in s.authors:
            for author in paper.authors:
                if author_matches(rule, author):
                    reasons.append(Reason("author", author, "authors", AUTHOR_POINTS))
                    evidence = True
                    break
        # A seed or liked paper is trivially like itself: that is no reason to send it.
        if w.name in alike and paper.key not in w.alike_keys:
            similarity, shared_terms = alike[w.name]
            if similarity >= s.min_similarity:  # the product's pick has a little slack
                reasons.append(Reason("similar", ", ".join(shared_terms), w.alike_to,
                                      round(s.similarity_weight * similarity, 4)))
                evidence = True
        unlike: Reason | None = None  # a lean against that only ranks, see below
        if w.learned and learned is not None:
            reason = _learned_reason(w, learned, row)
            reasons.append(reason)
            closest = learned.closest(row, w.name)
            if reason.points < 0 and not (closest is not None and closest.paper.value < 0):
                unlike = reason
            if not evidence and reason.points > 0:
                share = self._alone(w, learned.models.models[w.name])
                if reason.points < share * s.feedback_weight:
                    return verdict(f"{_nothing_matched(reasons)}, and the "
                                   f"ratings alone give {reason.points:g}, under "
                                   f"{round(share, 2):g} x feedback_weight")
                evidence = True
        if not evidence:
            return verdict(_nothing_matched(reasons))
        if s.category_boost or s.upvotes_boost or s.recency_boost:
            reasons.extend(_boosts(paper, s, now))
        total = round(sum(r.points for r in reasons), 4)
        if total < s.min_score and unlike is not None and total - unlike.points >= s.min_score:
            # Merely unlike the liked papers, as many a liked paper is too when the model
            # has not seen it, lowers a paper the rules send to the foot of the list and no
            # further: only a disliked paper near it can drop it.
            at_least = round(s.min_score - (total - unlike.points), 4)
            reasons = [replace(r, points=at_least) if r is unlike else r for r in reasons]
            total = round(sum(r.points for r in reasons), 4)
        if total < s.min_score:
            return verdict(f"score {total:g} below min_score {s.min_score:g}")
        return Explanation(w.name, total, tuple(reasons))

    def _alone(self, w: _Compiled, model: WatchlistModel) -> float:
        """The least share of feedback_weight for the ratings alone to send a paper.

        Past a watchlist's own rules, no less than the lean from which the model was right
        more often than not on papers it had not seen (``WatchlistModel.alone``): an author
        watch whose likes share no topic learns topics all the same, and would send papers
        on them by other authors. A watchlist of ratings alone has nothing else to send, so
        its model's best guesses go out from LEARNED_ALONE whatever they were worth.
        """
        if w.ratings_only:
            return LEARNED_ALONE
        return max(LEARNED_PAST_RULES, model.alone)


def _nothing_matched(reasons: list[Reason]) -> str:
    """Why a paper has no evidence; a category that let it through is not evidence."""
    if any(r.kind == "category" for r in reasons):
        return "no term, author or seed matched (its category only lets it through)"
    return "no term, author, category or seed matched"


def _digest_of(texts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _lean_floor(s: WatchlistSettings) -> float:
    """The least lean at which a model alone could send a paper: its points reach
    min_score, or with a boost to add, reach at least LEARNED_ALONE of feedback_weight."""
    floor = max(s.min_score, 1e-6) / s.feedback_weight
    if s.category_boost or s.upvotes_boost or s.recency_boost:
        floor = min(floor, LEARNED_ALONE)
    return floor


def _learned_reason(w: _Compiled, learned: _Learned, row: int) -> Reason:
    """The model's say, up to +/- feedback_weight, naming the nearest rated paper.

    Near a disliked paper it counts against; merely unlike the liked papers, a little.
    """
    weight = w.settings.feedback_weight
    closest = learned.closest(row, w.name)
    say = learned.models.models[w.name].say(learned.lean(row, w.name), closest)
    named = closest.paper.title if closest and (closest.paper.value > 0) == (say > 0) else ""
    return Reason("liked" if say > 0 else "unliked", named, "ratings", round(weight * say, 4),
                  weight=weight)


def _by_order(use: _Use) -> int:
    return use.order


def _meanings(uses: list[_Use]) -> dict[int, tuple[int, ...]]:
    """For each term written as an acronym, the watchlist's other terms that could be what
    it stands for: its terms that add points or gate, of two words or more, whose initials
    it spells."""
    out = {}
    for use in uses:
        acronym = use.term.acronym
        if acronym:
            meant = tuple(sorted({other.atom for other in uses
                                  if other.role in ("keyword", "query") and other.weight >= 0
                                  and other.term.kind != "regex"
                                  and spells(acronym, other.term.tokens)}))
            if meant:
                out[use.atom] = meant
    return out


def _meant(hits: _Hits, hit_uses: list[_Use], w: _Compiled) -> tuple[list[_Use], list[str]]:
    """The uses whose words mean here what the watchlist means by them, and a note for each
    acronym the paper defines as something else ("age-standardised rates (ASR)" where the
    watchlist lists ASR beside speech recognition): there, the acronym matches nothing."""
    kept, notes = [], []
    for use in hit_uses:
        meant = w.meanings.get(use.atom)
        if meant is not None:
            defined = [(field_name, first, last)
                       for field_name, text in hits.texts.items()
                       for first, last in text.definitions().get(use.term.acronym, ())]
            if defined and not any(_spoken_within(hits, meant, *place)
                                   or _worded_alike(hits, w.meaning_words[use.atom], *place)
                                   for place in defined):
                field_name, first, last = defined[0]
                text = hits.texts[field_name]
                start, end = text.raw_span(first, last)
                notes.append(f'"{use.term.text}" stands for "{text.raw[start:end]}" here')
                continue
        kept.append(use)
    return kept, notes


def _worded_alike(hits: _Hits, meanings: tuple[tuple[str, ...], ...], field_name: str,
                  first: int, last: int) -> bool:
    """Whether words ``first`` to ``last`` of a field, or a run of them, say one of
    ``meanings`` in other forms of its words: "low-rank adapters (LoRA)" for low-rank
    adaptation, "automatic speech recognisers (ASR)" for speech recognition. Word by word,
    each the same word, a form of it, or one that begins with the same five letters or more
    (adapt-, recogni-); "adaptive sparse routing (ASR)" says something else."""
    said = [word for word in hits.texts[field_name].words[first:last + 1] if word != MARK]
    return any(all(map(_akin, said[start:start + len(words)], words))
               for words in meanings for start in range(len(said) - len(words) + 1))


def _akin(said: str, meant: str) -> bool:
    if said == meant or len(os.path.commonprefix([said, meant])) >= AKIN_PREFIX:
        return True
    return bool(inflections(said) & inflections(meant))


def _spoken_within(hits: _Hits, atoms: tuple[int, ...], field_name: str, first: int,
                   last: int) -> bool:
    """Whether one of ``atoms`` matched within words ``first`` to ``last`` of a field."""
    low, high = hits.texts[field_name].char_span(first, last)
    return any(low <= start and end <= high for atom in atoms
               for start, end in hits.by_atom.get(atom, {}).get(field_name, ()))


def _term_reasons(hits: _Hits, hit_uses: list[_Use]) -> list[Reason]:
    """One reason per term and field that scored, in the order the watchlist wrote them.

    A stretch of text counts once: where terms of the watchlist overlap (``KV cache``,
    ``/kv[- ]?cache/`` and ``cache`` on "KV cache"), the one covering the most words takes
    it, then the heaviest, then the first written. Terms that lower a score count apart.
    """
    if len(hit_uses) == 1:  # the common case, spared the bookkeeping below
        use = hit_uses[0]
        if use.weight == 0 or (use.role != "keyword" and use.role != "query"):
            return []
        kind = "term" if use.weight > 0 else "negative"
        fields = hits.by_atom[use.atom]
        if use.term.field is not None:
            fields = {use.term.field: fields[use.term.field]} if use.term.field in fields else {}
        most = REPEAT_CAP + 1
        return [Reason(kind, use.term.text, field_name, round(
                    use.weight * FACTORS[field_name] * _REPEATED[min(len(spans), most)], 4),
                       len(spans), use.weight)
                for field_name, spans in fields.items()]
    counted: dict[tuple[int, str], int] = {}  # (order, field) -> places it took
    by_order = {}
    positive = []
    for use in hit_uses:
        if use.role == "keyword" or use.role == "query":
            by_order[use.order] = use
            if use.weight > 0:
                positive.append(use)
            elif use.weight < 0:
                for field_name, spans in hits.spans(use.atom, use.term.field).items():
                    counted[(use.order, field_name)] = len(spans)
    if len(positive) > 1:
        claims = [(last - first, use.weight, use.order, field_name, first, last)
                  for use in positive
                  for field_name, spans in hits.spans(use.atom, use.term.field).items()
                  for first, last in spans]
        taken: dict[str, list[Span]] = defaultdict(list)
        claims.sort(key=lambda c: (-c[0], -c[1], c[2], c[4]))
        for _, _, order, field_name, first, last in claims:
            held = taken[field_name]
            if any(first <= end and start <= last for start, end in held):
                continue
            held.append((first, last))
            counted[(order, field_name)] = counted.get((order, field_name), 0) + 1
    else:
        for use in positive:
            for field_name, spans in hits.spans(use.atom, use.term.field).items():
                counted[(use.order, field_name)] = len(spans)
    reasons = []
    places = sorted(counted.items(), key=_by_place) if len(counted) > 1 else counted.items()
    for (order, field_name), count in places:
        use = by_order[order]
        points = round(use.weight * FACTORS[field_name] * _repeated(count), 4)
        reasons.append(Reason("term" if use.weight > 0 else "negative", use.term.text,
                              field_name, points, count, use.weight))
    return reasons


def _repeated(count: int) -> float:
    """What ``count`` mentions in one field are worth, as a multiple of one: repeats add
    less and less, so repetition cannot run away."""
    return 1 + REPEAT_BONUS * (count - 1 if count <= REPEAT_CAP else REPEAT_CAP)


_REPEATED = [0.0, *(_repeated(n) for n in range(1, REPEAT_CAP + 2))]  # by min(count, cap + 1)


def _by_place(item: tuple[tuple[int, str], int]) -> tuple[int, int]:
    (order, field_name), _ = item
    return order, FIELD_ORDER[field_name]


def _score_keywords(hits: _Hits, hit_uses: list[_Use], w: _Compiled,
                    other_meanings: list[str]) -> Explanation:
    """The short path for a watchlist of keywords alone; the same result as the long one."""
    reasons = _term_reasons(hits, hit_uses)
    total = 0.0
    evidence = False
    for reason in reasons:
        total += reason.points
        evidence = evidence or reason.points > 0
    total = round(total, 4)
    if not evidence:
        return Explanation(w.name, total, tuple(reasons), "; ".join(
            ["no term, author, category or seed matched", *other_meanings]))
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


def with_shared_reasons(matches: Iterable[Match],
                        others: Iterable[Iterable[Match]]) -> list[Match]:
    """Each match with the reasons other watchlists gave the same paper (those sharing its
    channel, whose digests will not carry it again), after its own and without repeats."""
    extra: dict[str, list[Reason]] = defaultdict(list)
    for group in others:
        for match in group:
            extra[match.paper.key].extend(match.reasons)
    out = []
    for match in matches:
        more = extra.get(match.paper.key)
        if not more:
            out.append(match)
            continue
        merged = list(match.reasons)
        seen = {_reason_key(r) for r in merged}
        for reason in more:
            if _reason_key(reason) not in seen:
                seen.add(_reason_key(reason))
                merged.append(reason)
        out.append(replace(match, reasons=tuple(merged)))
    return out


def _reason_key(reason: Reason) -> tuple[str, str, str]:
    return reason.kind, reason.value.casefold(), reason.field


@lru_cache(maxsize=1 << 12)
def _normal_text(text: str) -> NormalText:
    """A title or abstract in the normal form, once for every digest that highlights it."""
    return NormalText(text)


@lru_cache(maxsize=1 << 12)
def _highlight_term(written: str) -> Term | None:
    try:
        return parse_term(written)
    except ValueError:
        return None


@lru_cache(maxsize=1 << 15)
def _term_spans(text: str, written: str) -> tuple[tuple[int, int], ...]:
    """Where one term covers ``text``, in raw characters. Kept per text and term: the
    watchlists of one run share many terms, and each digest highlights its own set."""
    term = _highlight_term(written)
    if term is None:
        return ()
    normal = _normal_text(text)
    return tuple(normal.raw_span(first, last) for first, last in term.spans(normal))


def prepare_highlights(terms: Iterable[str]) -> None:
    """Build what highlighting each term needs (its parse, its spellings, its regex)
    before the first text asks: a process that composes digests does this while the run
    scores."""
    for written in terms:
        term = _highlight_term(written)
        if term is not None:
            term.compiled()


def highlight_spans(text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) spans of the given terms in ``text``, in order, each
    covering whole words: a prefix or a regex that ends inside a word takes all of it."""
    spans = [span for written in terms for span in _term_spans(text, written)]
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
