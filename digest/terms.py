"""The watchlist language: terms and boolean queries, parsed once and checked at the edge.

A term is ``[title:|abstract:]`` followed by a phrase (``key-value cache``), a prefix
(``quantiz*``) or a regular expression (``/llama-?\\d/``). A query combines terms with
AND, OR, NOT and parentheses; adjacent words form one phrase; quotes keep a phrase whole.
Text and terms are compared in one normal form: case folded, hyphens, underscores and
slashes read as spaces, British spellings folded to American ones (breame's table, and the
-ise/-yse endings by rule), and a term's last word in its singular and plural forms
(inflect). A text is also read with its hyphenated compounds closed up (pre-training as
pretraining) and its suspended hyphens completed (4- and 8-bit as 4-bit and 8-bit).
"""

from __future__ import annotations

import bisect
import itertools
import re
import re._constants as _sre  # the opcodes of a parsed regex
import re._parser as _sre_parse
import sys
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import metadata
from typing import Any, Union

from breame.data.spelling_constants import BRITISH_ENGLISH_SPELLINGS

FIELDS = ("title", "abstract")
_SEPARATORS = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014_/]+")
_FIELD_PREFIX = re.compile(r"^([A-Za-z]+):(?=\S)")
_BARE_FIELD = re.compile(r"^([A-Za-z]+):$")
MAX_JOINED_TOKENS = 5  # phrases longer than this get only the spaced and fully joined forms
MARK = "\x01"  # stands where punctuation stood, so that no phrase runs across it


class TermError(ValueError):
    """A term or query that cannot be understood; the message says why."""


def normalise(text: str) -> str:
    """Case folded, separators read as spaces: how a term's words are read."""
    return " ".join(_SEPARATORS.sub(" ", text.casefold()).split())


# ------------------------------------------------------------------ spelling and inflection

# British -ise/-yse verbs and their derived forms, for the technical words no spelling table
# lists (quantise, tokenised, binarising). Three letters at least before the ending keep
# short words (rise, raise, noise) as they are; the fold is the same on both sides, so an
# ordinary word it reaches (precise -> precize) still matches itself.
_ISE = re.compile(r"^(\w{3,}?)(is|ys)(e|es|ed|er|ers|ing|ings|ation|ations|able)$")
_ISE_SUFFIXES = {"is": "iz", "ys": "yz"}
# The American spellings, with every spelling that folds to them, for a term's regex.
_SPELLINGS_OF: dict[str, set[str]] = {}
for _british, _american in BRITISH_ENGLISH_SPELLINGS.items():
    _SPELLINGS_OF.setdefault(_american, {_american}).add(_british)


@lru_cache(maxsize=1 << 17)
def fold_word(word: str) -> str:
    """One case-folded word in the spelling both sides are compared in: American."""
    american = BRITISH_ENGLISH_SPELLINGS.get(word)
    if american is not None:
        return american
    found = _ISE.match(word)
    if found is not None:
        stem, middle, ending = found.groups()
        return stem + _ISE_SUFFIXES[middle] + ending
    return word


def spellings(folded: str) -> set[str]:
    """Every case-folded word that folds to ``folded``."""
    out = {folded, *_SPELLINGS_OF.get(folded, ())}
    found = re.match(r"^(\w{3,}?)(iz|yz)(e|es|ed|er|ers|ing|ings|ation|ations|able)$", folded)
    if found is not None:
        stem, middle, ending = found.groups()
        out.add(stem + middle.replace("z", "s") + ending)
    return {word for word in out if fold_word(word) == folded}


@cache
def _engines() -> tuple[Any, Any]:
    """inflect's engines, classical (matrix -> matrices, index -> indices) and modern
    (index -> indexes). Imported on first need, and a run whose words are all in the
    store's kept forms (``remember_forms``) never needs it."""
    inflect = _import_inflect()
    classical = inflect.engine()
    classical.classical(all=True)
    return classical, inflect.engine()


def _import_inflect() -> Any:
    """inflect, imported without typeguard's instrumentation of its functions.

    inflect decorates its functions with ``typeguard.typechecked``, which re-parses and
    recompiles each one at import (jaraco/inflect#212): 1.4 s of every run's start, and a
    check on every call after it. The checks only refuse arguments of the wrong type, and
    this module passes inflect plain strings, so the decorator is made a pass-through for
    the import and put back after it. A process that imported inflect already keeps it.
    One thread at a time (``serve`` scores in its scheduler and its web app): a second
    would wait for the module rather than find it half made, and could not take the
    pass-through for the decorator it puts back."""
    with _INFLECT_IMPORT:
        if "inflect" in sys.modules:
            import inflect
            return inflect
        try:
            import typeguard
        except ImportError:  # an inflect that no longer uses typeguard
            import inflect
            return inflect
        instrument = typeguard.typechecked

        def pass_through(target: Any = None, **_options: Any) -> Any:
            return target if target is not None else (lambda function: function)

        typeguard.typechecked = pass_through
        try:
            import inflect
        finally:
            typeguard.typechecked = instrument
        return inflect


_INFLECT_IMPORT = threading.Lock()


# Forms found earlier, read back from the store, and those found in this process.
_KNOWN_FORMS: dict[str, frozenset[str]] = {}
_NEW_FORMS: dict[str, frozenset[str]] = {}


def remember_forms(known: dict[str, frozenset[str]]) -> None:
    """Forms kept from earlier runs, by word: used instead of asking inflect again."""
    _KNOWN_FORMS.update(known)


def new_forms() -> dict[str, frozenset[str]]:
    """The forms inflect gave in this process, to keep for the next."""
    return dict(_NEW_FORMS)


FORMS_RULES = "both plurals"


def forms_version() -> str:
    """What the kept forms were made by: other versions of inflect may form them otherwise."""
    # The second part names how forms are asked of inflect (_inflect): a change to that
    # makes the kept forms stale as a new inflect would.
    try:
        return f"inflect {metadata.version('inflect')}; {FORMS_RULES}"
    except metadata.PackageNotFoundError:
        return f"inflect; {FORMS_RULES}"


@lru_cache(maxsize=1 << 16)
def inflections(token: str) -> frozenset[str]:
    """A word with its plurals, or with its singular when written as a plural (inflect)."""
    if not token[-1:].isalpha():
        return frozenset({token, token + "s"}) if token[-1:].isalnum() else frozenset({token})
    known = _KNOWN_FORMS.get(token)
    if known is not None:
        return known
    found = _inflect(token)
    _NEW_FORMS[token] = found
    return found


def _inflect(token: str) -> frozenset[str]:
    classical, modern = _engines()
    # inflect is thorough but not fast: a word is asked for its singular only when it
    # ends as English plurals do (models, criteria, radii, mice, children). Both plurals
    # count: the classical one (matrices, persons) and the modern one (matrixes, people).
    found = classical.singular_noun(token) if token[-1] in "saien" else False
    singular: str = found if isinstance(found, str) else ""
    # inflect reads any word ending in s as a plural (bias -> bia, analysis -> analysi):
    # a singular made by dropping the s of -is, -us, -ss or -as is no word of its own.
    if (len(singular) < 3
            or (token.endswith(("is", "us", "ss", "as")) and singular == token[:-1])):
        singular = token
    forms = {token, singular, classical.plural_noun(singular), modern.plural_noun(singular)}
    return frozenset(f.casefold() for f in forms if f and " " not in f)


@lru_cache(maxsize=1 << 17)
def _fold_token(token: str) -> str:
    return fold_word(token.casefold()) if token[0].isalnum() else MARK


_TOKEN = re.compile(r"[^\W_]+|[^\w\s\-\u2010\u2011\u2012\u2013\u2014/]")
_NO_OFFSETS: array[int] = array("I")


class NormalText:
    """A text in the normal form: its words folded, a space on each side of every word, and
    a mark where punctuation stood. ``text`` is what terms are matched in; a whole word is
    simply ``' word '``. Word ``i`` of ``text`` is token ``i`` of the raw text, so a match
    maps back to the raw characters it covers.

    Word offsets are kept as arrays of 4-byte numbers: texts are cached by the thousand
    for highlighting, and as lists of ints their offsets took most of that memory."""

    __slots__ = ("raw", "words", "text", "_starts", "_raw_starts", "_raw_ends", "_definitions")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.words = list(map(_fold_token, _TOKEN.findall(raw)))
        self.text = " " + " ".join(self.words) + " "
        self._starts: array[int] | None = None
        self._raw_starts: array[int] | None = None
        self._raw_ends: array[int] = _NO_OFFSETS
        self._definitions: dict[str, list[tuple[int, int]]] | None = None

    def readings(self, vocabulary: Vocabulary | None = None) -> list[Reading]:
        """The other ways this text reads where it joins words with hyphens (see Reading);
        with a vocabulary, only those whose new words it holds, the ones that can matter."""
        if not _HAS_HYPHEN.search(self.raw):
            return []
        return _readings(self, vocabulary)

    def definitions(self) -> dict[str, list[tuple[int, int]]]:
        """The acronyms this text defines, "long form (ACRONYM)", each case-folded with the
        first and last word of what it stands for here: "age-standardised rates (ASR)"
        gives {"asr": [(first, last)]}."""
        if self._definitions is None:
            self._definitions = _definitions(self) if "(" in self.raw else {}
        return self._definitions

    def word_at(self, offset: int) -> int:
        """The index of the word at ``offset`` of ``text`` (or of the word before a space)."""
        if self._starts is None:
            self._starts = array("I", itertools.accumulate(
                (len(word) + 1 for word in self.words[:-1]), initial=1))
        return bisect.bisect_right(self._starts, offset) - 1

    def char_span(self, first: int, last: int) -> tuple[int, int]:
        """The first and last character of ``text`` that words ``first`` to ``last`` cover."""
        self.word_at(0)
        assert self._starts is not None
        return self._starts[first], self._starts[last] + len(self.words[last]) - 1

    def _raw_spans(self) -> tuple[array[int], array[int]]:
        if self._raw_starts is None:
            bounds = array("I", itertools.chain.from_iterable(
                m.span() for m in _TOKEN.finditer(self.raw)))
            self._raw_starts, self._raw_ends = bounds[0::2], bounds[1::2]
        return self._raw_starts, self._raw_ends

    def words_of_raw(self, start: int, end: int) -> tuple[int, int] | None:
        """The first and last word a raw character range touches; None when it holds none."""
        starts, ends = self._raw_spans()
        first = bisect.bisect_right(ends, start)
        last = bisect.bisect_left(starts, end) - 1
        return (first, last) if first <= last else None

    def raw_span(self, first: int, last: int) -> tuple[int, int]:
        """The raw characters from word ``first`` to word ``last``, both whole."""
        starts, ends = self._raw_spans()
        return starts[first], ends[last]


def word_text(text: str) -> str:
    """The normal form of a text, as terms are matched in it."""
    return NormalText(text).text


# ------------------------------------------------------------------ hyphenated compounds

# Hyphens, not the en and em dashes: "2–4 bits" is a range, not a compound.
_HYPHENS = "\\-\u2010\u2011"
_HAS_HYPHEN = re.compile(rf"[^\W_][{_HYPHENS}]")
# possessive, and from a word's start only: a word without a hyphen fails at once
_COMPOUND = re.compile(rf"(?<![^\W_])[^\W_]++(?:[{_HYPHENS}][^\W_]++)+")
# "4- and 8-bit", "pre-, mid- or post-training", "2- to 4-bit": words left hanging on a
# hyphen before and/or/to or a comma, then the compound that completes them.
_SUSPENDED = re.compile(
    rf"(?<![\w{_HYPHENS}])(?P<parts>(?:[^\W_]+[{_HYPHENS}]"
    rf"(?:\s*,\s*(?:(?:and|or)\s+)?|\s+(?:and|or|to)\s+))+)"
    rf"[^\W_]+[{_HYPHENS}](?P<rest>[^\W_]+(?:[{_HYPHENS}][^\W_]+)*)", re.IGNORECASE)
_MAY_HANG = re.compile(rf"[{_HYPHENS}](?:\s*,|\s+(?:and|or|to)\s)", re.IGNORECASE)
_HANGING = re.compile(rf"[^\W_]+(?=[{_HYPHENS}])")
_WORD = re.compile(r"[^\W_]+")
_HYPHENS_TO_SPACES = str.maketrans("-\u2010\u2011", "   ")
MAX_JOINED_PARTS = 4  # a longer compound is closed up whole and pair by pair only
CONTEXT_WORDS = 6  # words kept on each side of a reading, for phrases that run through it


class Vocabulary:
    """The words some terms are made of, and the open ends of their prefixes: a word of a
    text that is none of them cannot be part of any of their matches."""

    __slots__ = ("words", "stems", "_shortest")

    def __init__(self, terms: Iterable[Term]) -> None:
        self.words: set[str] = set()
        self.stems: set[str] = set()
        for term in terms:
            if term.on_raw_text:
                continue
            # the words as written, not the closed-up forms of the term's own words
            # (keyvalue for key-value): a compound in the text holds those spaced already
            *head, last = term.tokens
            self.words.update(fold_word(word) for word in head)
            if term.kind == "prefix":
                self.stems.update(_prefix_spellings(last))
            else:
                self.words.update(fold_word(form) for form in inflections(last))
        self._shortest = min(map(len, self.stems), default=0)

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        if word in self.words:
            return True
        return bool(self.stems) and any(
            word[:size] in self.stems for size in range(self._shortest, len(word) + 1))


@dataclass(frozen=True, slots=True)
class Reading:
    """Another way to read a few words of a text: a hyphenated compound closed up
    (pre-training as pretraining, so that the term ``pretraining`` finds it), or the word a
    suspended hyphen leaves out put back (4- and 8-bit as 4 bit). ``text`` is in the normal
    form, with up to CONTEXT_WORDS of the text on each side; ``firsts`` and ``lasts`` give,
    for each of its words, the first and last word of the text it stands for; words
    ``new_first`` to ``new_last`` are the ones read differently. A match counts only where
    it takes in one of those: elsewhere the text itself holds it."""

    text: str
    firsts: tuple[int, ...]
    lasts: tuple[int, ...]
    new_first: int
    new_last: int

    def words_of(self, start: int, end: int) -> tuple[int, int] | None:
        """The first and last word of the text that characters ``start`` to ``end`` (both
        included) of ``text`` stand for; None when they leave the new words out."""
        first = self.text.count(" ", 0, start + 1) - 1
        last = self.text.count(" ", 0, end + 1) - 1
        if last < self.new_first or first > self.new_last:
            return None
        return self.firsts[first], self.lasts[last]


def places_apart(held: list[tuple[int, int]],
                 more: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The places of ``more`` (first, last) that overlap neither ``held`` nor each other,
    the longest first: a compound read two ways ("fine-tuning", "finetuning") or a prefix
    found in a word and in its compound counts once."""
    taken = list(held)
    out = []
    for first, last in sorted(set(more), key=lambda place: (place[0] - place[1], place)):
        if not any(first <= end and start <= last for start, end in taken):
            taken.append((first, last))
            out.append((first, last))
    return out


def _readings(text: NormalText, vocabulary: Vocabulary | None) -> list[Reading]:
    words = text.words
    out = []

    def read(first: int, last: int, middle: list[tuple[str, int, int]]) -> None:
        """Words ``first`` to ``last`` of the text read as ``middle``, in their context."""
        if vocabulary is not None and not any(w in vocabulary for w, _, _ in middle):
            return
        before = [(words[i], i, i) for i in range(max(0, first - CONTEXT_WORDS), first)]
        after = [(words[i], i, i)
                 for i in range(last + 1, min(len(words), last + 1 + CONTEXT_WORDS))]
        spelled = before + middle + after
        out.append(Reading(" " + " ".join(w for w, _, _ in spelled) + " ",
                           tuple(f for _, f, _ in spelled), tuple(t for _, _, t in spelled),
                           len(before), len(before) + len(middle) - 1))

    for found in _COMPOUND.finditer(text.raw):
        parts = found.group().casefold().translate(_HYPHENS_TO_SPACES).split(" ")
        count = len(parts)
        pairs = ([(i, j) for i in range(count) for j in range(i + 1, count)]
                 if count <= MAX_JOINED_PARTS
                 else [(0, count - 1), *((i, i + 1) for i in range(count - 1))])
        joinings = [(i, j, fold_word("".join(parts[i:j + 1]))) for i, j in pairs]
        if vocabulary is not None:
            joinings = [(i, j, joined) for i, j, joined in joinings if joined in vocabulary]
        if not joinings:
            continue
        # the parts of a compound are consecutive words of the text
        place = text.words_of_raw(found.start(), found.start() + len(parts[0]))
        if place is None:
            continue
        for i, j, joined in joinings:
            first, last = place[0] + i, place[0] + j
            read(first, last, [(joined, first, last)])
    if not _MAY_HANG.search(text.raw):
        return out
    for found in _SUSPENDED.finditer(text.raw):
        rest = [fold_word(w.casefold()) for w in _WORD.findall(found.group("rest"))]
        end = text.words_of_raw(found.start("rest"), found.end("rest"))
        offset = found.start("parts")
        for part in _HANGING.finditer(found.group("parts")):
            place = text.words_of_raw(offset + part.start(), offset + part.end())
            if place is None or end is None:
                continue
            at = place[0]
            word = part.group().casefold()
            # the hanging word completed, spaced and closed up, then the words after the
            # compound that completes it: "4- and 8-bit weights" reads "4 bit weights"
            read(at, end[1], [(fold_word(word), at, at), *((w, at, at) for w in rest)])
            read(at, end[1], [(fold_word(word + "".join(rest)), at, at)])
    return out


# ------------------------------------------------------------------ acronyms

# An acronym as papers write one: two capitals at least among letters and digits ("ASR",
# "LoRA", "GPT4"), perhaps with a plural s ("GNNs").
_ACRONYM = re.compile(r"^(?=(?:[^A-Z]*[A-Z]){2})[A-Za-z][A-Za-z0-9]{1,9}$")
_DEFINED = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9]{1,10})\s*\)")


def acronym_of(written: str) -> str:
    """The case-folded acronym a word is written as ("ASR" -> "asr", "GNNs" -> "gnn"), or ""
    when it is not written as one."""
    if written.endswith("s") and _ACRONYM.match(written[:-1]):
        written = written[:-1]
    return written.casefold() if _ACRONYM.match(written) else ""


def _definitions(text: NormalText) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for found in _DEFINED.finditer(text.raw):
        short = acronym_of(found.group(1))
        opening = text.words_of_raw(found.start(), found.start() + 1)
        if not short or opening is None:
            continue
        # Schwartz and Hearst's rule: the long form is at most min(|A| + 5, 2|A|) words
        # before the brackets, and spells the acronym's letters in order, the first of
        # them starting a word.
        first = opening[0]
        while first > 0 and opening[0] - first < min(len(short) + 5, 2 * len(short)):
            if text.words[first - 1] == MARK:
                break
            first -= 1
        start = _long_form(short, text.words[first:opening[0]])
        if start is not None:
            out.setdefault(short, []).append((first + start, opening[0] - 1))
    return out


def _long_form(short: str, words: list[str]) -> int | None:
    """Which of ``words`` the acronym's long form starts at, the latest that spells it."""
    joined = " ".join(words)
    at = len(joined) - 1
    for position in range(len(short) - 1, -1, -1):
        letter = short[position]
        while at >= 0 and (joined[at] != letter
                           or (position == 0 and at > 0 and joined[at - 1] != " ")):
            at -= 1
        if at < 0:
            return None
        at -= 1
    start = at + 1
    if start >= len(joined) - len(short) or short in joined[start:].split():
        return None  # no longer than the acronym, or the acronym itself
    return joined[:start].count(" ")


def spells(acronym: str, tokens: tuple[str, ...]) -> bool:
    """Whether a phrase of two words or more could be what an acronym stands for: the
    initials of its words, in order, among the acronym's letters and ending with its last
    (speech recognition for ASR, low-rank adaptation for LoRA)."""
    if len(tokens) < 2 or not acronym:
        return False
    initials = [token[0] for token in tokens]
    if initials[-1] != acronym[-1]:
        return False
    letters = iter(acronym)
    return all(initial in letters for initial in initials)


@dataclass(frozen=True, slots=True)
class Term:
    """One parsed term. ``key`` is what two spellings of the same term share."""

    text: str
    field: str | None  # None: title and abstract
    kind: str  # phrase | prefix | regex
    tokens: tuple[str, ...] = ()
    regex: str = ""

    @property
    def acronym(self) -> str:
        """The case-folded acronym this term is written as ("ASR", "LoRA"), or ""."""
        if self.kind != "phrase" or len(self.tokens) != 1:
            return ""
        written = _FIELD_PREFIX.sub("", self.text, count=1).strip().strip('"')
        return acronym_of(written)

    @property
    def key(self) -> tuple[str, str]:
        if self.kind == "regex":
            return (self.kind, self.regex)
        if self.kind == "prefix":
            return (self.kind, " ".join(self.tokens))
        return (self.kind, " ".join(fold_word(token) for token in self.tokens))

    def variants(self) -> frozenset[str]:
        """Every spelling in the normal form that counts as this term (not for regexes)."""
        return _variants(self.kind, self.tokens)

    @property
    def wordy(self) -> bool:
        """Made of letters and digits only, so the automaton can match it by whole words."""
        return self.kind != "regex" and all(
            ch.isalnum() or ch == " " for variant in self.variants() for ch in variant)

    @property
    def on_raw_text(self) -> bool:
        """Whether ``compiled()`` reads the raw text (regexes, terms with symbols such as
        C++) rather than the normal form."""
        return self.kind == "regex" or not self.wordy

    def compiled(self) -> re.Pattern[str]:
        """A regex with the same meaning as the automaton: over ``NormalText.text`` for a
        wordy term, over the raw text otherwise. For highlighting and baselines."""
        return _compiled(self)

    def spans(self, text: NormalText) -> list[tuple[int, int]]:
        """(first word, last word) of each place this term covers in ``text``; a regex
        covers every word it touches."""
        pattern = self.compiled()
        out = []
        if self.on_raw_text:
            for found in pattern.finditer(text.raw):
                if found.end() > found.start():
                    words = text.words_of_raw(*found.span())
                    if words is not None:
                        out.append(words)
            return out
        for found in pattern.finditer(text.text):
            out.append((text.word_at(found.start()), text.word_at(found.end() - 1)))
        readings = text.readings(_vocabulary(self))
        if readings:
            more = []
            for reading in readings:
                for found in pattern.finditer(reading.text):
                    words = reading.words_of(found.start(), found.end() - 1)
                    if words is not None:
                        more.append(words)
            out = sorted(out + places_apart(out, more))
        return out


@lru_cache(maxsize=1 << 16)
def _variants(kind: str, tokens: tuple[str, ...]) -> frozenset[str]:
    if kind == "regex":
        return frozenset()
    *head, last = tokens
    endings = (_prefix_spellings(last) if kind == "prefix"
               else {fold_word(form) for form in inflections(last)})
    forms = set()
    for ending in endings:
        for joined in _joinings((*head, ending)):
            words = joined.split(" ")
            if kind == "prefix":  # the last word is open: only its start is known
                forms.add(" ".join([*(fold_word(w) for w in words[:-1]), words[-1]]))
            else:
                forms.add(" ".join(fold_word(w) for w in words))
    return frozenset(forms)


@lru_cache(maxsize=1 << 12)
def _vocabulary(term: Term) -> Vocabulary:
    return Vocabulary([term])


@lru_cache(maxsize=1 << 12)
def _compiled(term: Term) -> re.Pattern[str]:
    if term.kind == "regex":
        return re.compile(term.regex, re.IGNORECASE)
    if term.wordy:
        alternatives = "|".join(re.escape(v) for v in sorted(term.variants(), key=len,
                                                               reverse=True))
        end = r"[^ ]*" if term.kind == "prefix" else "(?= )"
        return re.compile(f"(?<= )(?:{alternatives}){end}")
    separator = r"[\s\-\u2010\u2011\u2012\u2013\u2014_/]*"
    *head, last = term.tokens
    if term.kind == "prefix":
        tail = re.escape(last) + r"[^\W_]*"
        end = ""
    else:
        tail = "(?:" + "|".join(re.escape(f) for f in sorted(inflections(last), key=len,
                                                               reverse=True)) + ")"
        end = r"(?![^\W_])"  # an underscore separates words, as in the normal form
    body = separator.join([*(re.escape(t) for t in head), tail])
    return re.compile(r"(?<![^\W_])" + body + end, re.IGNORECASE)


_ENDINGS = ("e", "es", "ed", "er", "ers", "ing", "ings", "ation", "ations", "able")


def _prefix_spellings(prefix: str) -> set[str]:
    """A prefix as written and folded: quantis* also reads quantiz*, colour* color*."""
    out = {prefix, fold_word(prefix)}
    found = re.match(r"^(\w{3,}?)(is|ys)(\w{0,6})$", prefix)
    if found is not None and any(e.startswith(found.group(3)) for e in _ENDINGS):
        stem, middle, rest = found.groups()
        out.add(stem + _ISE_SUFFIXES[middle] + rest)
    return out


def _joinings(tokens: tuple[str, ...]) -> list[str]:
    """Spaced, fully joined, and (for short phrases) every mix: key value, keyvalue."""
    if len(tokens) == 1:
        return [tokens[0]]
    if len(tokens) > MAX_JOINED_TOKENS:
        return [" ".join(tokens), "".join(tokens)]
    out = []
    for gaps in itertools.product((" ", ""), repeat=len(tokens) - 1):
        out.append(tokens[0] + "".join(g + t for g, t in zip(gaps, tokens[1:], strict=True)))
    return out


def _nested_repeat(items: Any, inside: bool = False) -> bool:
    """Whether a regex's parse tree holds a repeat that can take more than once inside
    another (on a text it does not match, backtracking tries every way to split the text
    between them, in exponential time, and the matching cannot be interrupted). A repeat
    of at most one (``?``) never nests that way. A possessive repeat or an atomic group
    gives nothing back once matched, so it is safe inside a repeat, but what it holds is
    read on its own: its own nested repeats still backtrack while it matches."""
    for op, value in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            repeats = value[1] > 1
            if repeats and inside:
                return True
            parts, deeper = [value[2]], inside or repeats
        elif op is _sre.POSSESSIVE_REPEAT:
            parts, deeper = [value[2]], False
        elif op is _sre.ATOMIC_GROUP:
            parts, deeper = [value], False
        elif op is _sre.SUBPATTERN:
            parts, deeper = [value[-1]], inside
        elif op is _sre.BRANCH:
            parts, deeper = value[1], inside
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            parts, deeper = [value[1]], inside
        elif op is _sre.GROUPREF_EXISTS:
            parts, deeper = [branch for branch in value[1:] if branch is not None], inside
        else:
            continue
        if any(_nested_repeat(part, deeper) for part in parts):
            return True
    return False


def parse_term(text: str) -> Term:
    """Parse one term; raise TermError with the reason when it cannot be used."""
    raw = text.strip()
    field = None
    if (bare := _BARE_FIELD.match(raw)) and bare.group(1).lower() in FIELDS:
        raise TermError(f"'{raw}' names a field but no term: a field applies to the one term "
                        f"written right after it, as in {bare.group(1)}:LoRA OR "
                        f"{bare.group(1)}:adapters, not to a group in brackets")
    prefix = _FIELD_PREFIX.match(raw)
    if prefix and not raw.startswith("/"):
        name = prefix.group(1).lower()
        if name not in FIELDS:
            raise TermError(f"unknown field '{prefix.group(1)}' (use title: or abstract:)")
        field = name
        raw = raw[prefix.end():].strip()
    if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        raw = raw[1:-1]
    if len(raw) >= 2 and raw.startswith("/") and raw.endswith("/"):
        pattern = raw[1:-1]
        if not pattern:
            raise TermError("empty regex")
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise TermError(f"invalid regex /{pattern}/: {exc}") from exc
        try:
            nested = _nested_repeat(_sre_parse.parse(pattern, re.IGNORECASE))
        except RecursionError:  # groups nested hundreds deep: not a term anyone means
            raise TermError(f"regex /{pattern[:60]}/ nests its groups too deeply") from None
        if nested:
            raise TermError(
                f"regex /{pattern}/ repeats a group that itself repeats, as (\\w+\\s?)+ does: "
                "on a text it does not match, that may take hours and stall the run; make "
                "the inner repeat possessive, as in (\\w++\\s?)+, or drop the outer one")
        return Term(text=text.strip(), field=field, kind="regex", regex=pattern)
    kind = "phrase"
    if raw.endswith("*"):
        kind = "prefix"
        raw = raw[:-1]
        if "*" in raw:
            raise TermError("'*' may only end a term, as in quantiz*")
    elif "*" in raw:
        raise TermError("'*' may only end a term, as in quantiz*")
    tokens = tuple(normalise(raw).split())
    if not tokens or not any(ch.isalnum() for ch in "".join(tokens)):
        raise TermError("empty phrase")
    if kind == "prefix" and len(tokens[-1]) < 3:
        raise TermError("a prefix needs at least 3 letters before '*'")
    return Term(text=text.strip(), field=field, kind=kind, tokens=tokens)


# ------------------------------------------------------------------------ queries


@dataclass(frozen=True, slots=True)
class Not:
    child: Query


@dataclass(frozen=True, slots=True)
class All:
    children: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Query, ...]


Query = Union[Term, Not, All, AnyOf]  # noqa: UP007 - a runtime alias

_QUERY_TOKEN = re.compile(
    r'\s*(?:(\()|(\))|((?:[A-Za-z]+:)?"[^"]*")|((?:[A-Za-z]+:)?/(?:\\.|[^/])+/)'
    r"|(\S+?)(?=[\s()]|$))")


def _lex(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _QUERY_TOKEN.match(text, position)
        if match is None or match.end() == position:
            rest = text[position:].strip()
            if rest.count('"') % 2:
                raise TermError(f"unterminated quote in {rest!r}")
            raise TermError(f"cannot read {rest!r}")
        position = match.end()
        opening, closing, quoted, regex, word = match.groups()
        if opening:
            tokens.append(("(", "("))
        elif closing:
            tokens.append((")", ")"))
        elif quoted or regex:
            tokens.append(("term", quoted or regex))
        elif word in ("AND", "OR", "NOT"):
            tokens.append((word, word))
        elif word.count('"'):
            raise TermError(f"unterminated quote in {word!r}")
        else:
            # adjacent bare words make one phrase
            if tokens and tokens[-1][0] == "word":
                tokens[-1] = ("word", tokens[-1][1] + " " + word)
            else:
                tokens.append(("word", word))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expression(self) -> Query:
        children = [self.conjunction()]
        while self.peek() == "OR":
            self.take()
            children.append(self.conjunction())
        return children[0] if len(children) == 1 else AnyOf(tuple(children))

    def conjunction(self) -> Query:
        children = [self.negation()]
        while self.peek() in ("AND", "NOT", "(", "term", "word"):
            if self.peek() == "AND":
                self.take()
            children.append(self.negation())
        return children[0] if len(children) == 1 else All(tuple(children))

    def negation(self) -> Query:
        if self.peek() == "NOT":
            self.take()
            return Not(self.negation())
        return self.atom()

    def atom(self) -> Query:
        kind = self.peek()
        if kind is None:
            raise TermError("the query ends where a term was expected")
        if kind == "(":
            self.take()
            if self.peek() == ")":
                raise TermError("empty group '()': put a term or more between the brackets")
            inner = self.expression()
            if self.peek() != ")":
                raise TermError("unbalanced group: missing ')'")
            self.take()
            return inner
        if kind == ")":
            raise TermError("unbalanced group: ')' without '('")
        if kind in ("AND", "OR"):
            raise TermError(f"'{kind}' needs a term on each side")
        return parse_term(self.take()[1])


def parse_query(text: str) -> Query:
    """Parse a boolean query; raise TermError naming what is wrong."""
    tokens = _lex(text)
    if not tokens:
        raise TermError("empty query")
    parser = _Parser(tokens)
    tree = parser.expression()
    if parser.position < len(tokens):
        token = tokens[parser.position][1]
        if token == ")":
            raise TermError("unbalanced group: ')' without '('")
        raise TermError(f"unexpected {token!r}")
    return tree


_BOOLEAN_WORDS = ("and", "or", "not")


def _phrase_warnings(phrase: str, *, in_query: bool, exclude: bool = False) -> list[str]:
    """What in an unquoted phrase is probably meant as an operator: a phrase matches only
    text that says all of it, so such a term matches next to nothing. In an ``exclude``
    entry, -word is simply the word to keep out, as meant."""
    # What a query writes to combine terms; a keyword or an exclude entry is one term, and
    # a list of them is already an any-of.
    combine = ("write {op} to combine terms" if in_query
               else "list each term as its own entry (any of them counts), or write the "
                    "rule in query with AND, OR, NOT")
    out = []
    for word in phrase.split():
        folded = word.casefold()
        if folded in _BOOLEAN_WORDS and (word != word.upper() or not in_query):
            out.append(f"'{word}' in \"{phrase}\" is read as a word of the phrase, so the "
                       "phrase matches only text that says it; "
                       + combine.format(op=word.upper()) + ", or quote the phrase to keep it")
        elif word in _SYMBOL_OPERATORS:
            op = _SYMBOL_OPERATORS[word]
            out.append(f"'{word}' in \"{phrase}\" is no operator but text the phrase must "
                       "hold, so it matches next to nothing; " + combine.format(op=op))
        elif word.startswith("-") and word[1:2].isalnum() and not exclude:
            remedy = (f"write NOT {word[1:]}" if in_query
                      else "list it in exclude")
            out.append(f"'{word}' is read as the word \"{word[1:]}\", which a paper must "
                       f"then contain; to keep such papers out, {remedy}")
        elif word.startswith("+") and word[1:2].isalnum():
            out.append(f"'{word}' is read with its '+', which no text spells that way; "
                       + ("write AND between terms that must all be there" if in_query
                          else f"write {word[1:]}"))
    if "," in phrase:
        out.append(f"\"{phrase}\" is one phrase: a comma does not separate terms; "
                   + combine.format(op="OR"))
    return out


_SYMBOL_OPERATORS = {"&&": "AND", "&": "AND", "||": "OR", "|": "OR"}


def query_warnings(text: str) -> list[str]:
    """What in a query is probably not meant as written: lowercase and/or/not between
    words, and -word, both read as phrase text. Quoted phrases are taken as meant."""
    try:
        tokens = _lex(text)
    except TermError:
        return []  # the problem itself is reported elsewhere
    out = []
    for kind, value in tokens:
        if kind == "word":
            out += _phrase_warnings(value, in_query=True)
    return out


def keyword_warnings(text: str, *, exclude: bool = False) -> list[str]:
    """The same for one keyword or ``exclude`` entry: an unquoted phrase with an operator
    in it (and, OR, &&, a comma), or a -word (in exclude, -word is simply the word)."""
    raw = _FIELD_PREFIX.sub("", text.strip(), count=1).strip()
    if raw.startswith(('"', "/")):
        return []
    return _phrase_warnings(raw, in_query=False, exclude=exclude)


def query_terms(query: Query, *, negated: bool = False) -> list[tuple[Term, bool]]:
    """Every term in a query, with whether it sits under a NOT."""
    if isinstance(query, Term):
        return [(query, negated)]
    if isinstance(query, Not):
        return query_terms(query.child, negated=not negated)
    out: list[tuple[Term, bool]] = []
    for child in query.children:
        out += query_terms(child, negated=negated)
    return out


def evaluate(query: Query, matched: set[tuple[tuple[str, str], str | None]]) -> bool:
    """Whether a query holds, given the (term key, field) pairs that matched."""
    if isinstance(query, Term):
        return (query.key, query.field) in matched
    if isinstance(query, Not):
        return not evaluate(query.child, matched)
    if isinstance(query, All):
        return all(evaluate(child, matched) for child in query.children)
    return any(evaluate(child, matched) for child in query.children)
