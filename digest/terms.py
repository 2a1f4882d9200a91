"""The watchlist language: terms and boolean queries, parsed once and checked at the edge.

A term is ``[title:|abstract:]`` followed by a phrase (``key-value cache``), a prefix
(``quantiz*``) or a regular expression (``/llama-?\\d/``). A query combines terms with
AND, OR, NOT and parentheses; adjacent words form one phrase; quotes keep a phrase whole.
Text and terms are compared in one normal form: case folded, hyphens, underscores and
slashes read as spaces.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Union

FIELDS = ("title", "abstract")
_SEPARATORS = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014_/]+")
_FIELD_PREFIX = re.compile(r"^([A-Za-z]+):(?=\S)")
MAX_JOINED_TOKENS = 5  # phrases longer than this get only the spaced and fully joined forms


class TermError(ValueError):
    """A term or query that cannot be understood; the message says why."""


def normalise(text: str) -> str:
    """The form both papers and terms are matched in."""
    return " ".join(_SEPARATORS.sub(" ", text.casefold()).split())


_PUNCTUATION = re.compile(r"[^\w\s\-\u2010\u2011\u2012\u2013\u2014/]")


def word_text(text: str) -> str:
    """The normal form with a space on each side of every word, and a mark where
    punctuation stood, so that a whole word is simply ' word ' and no phrase runs across
    a comma or a bracket."""
    marked = _PUNCTUATION.sub(" \x01 ", text.casefold())
    return " " + " ".join(_SEPARATORS.sub(" ", marked).split()) + " "


@dataclass(frozen=True, slots=True)
class Term:
    """One parsed term. ``key`` is what two spellings of the same term share."""

    text: str
    field: str | None  # None: title and abstract
    kind: str  # phrase | prefix | regex
    tokens: tuple[str, ...] = ()
    regex: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.regex if self.kind == "regex" else " ".join(self.tokens))

    def variants(self) -> frozenset[str]:
        """Every normalised spelling that counts as this term (not for regex terms)."""
        if self.kind == "regex":
            return frozenset()
        if self.kind == "prefix":
            return frozenset(_joinings(self.tokens))
        *head, last = self.tokens
        forms = set()
        for ending in plural_forms(last):
            forms.update(_joinings((*head, ending)))
        return frozenset(forms)

    @property
    def wordy(self) -> bool:
        """Made of letters and digits only, so the automaton can match it by whole words."""
        return self.kind != "regex" and all(
            ch.isalnum() or ch == " " for variant in self.variants() for ch in variant)

    def compiled(self) -> re.Pattern[str]:
        """A regex over raw text with the same meaning, for highlighting and baselines."""
        if self.kind == "regex":
            return re.compile(self.regex, re.IGNORECASE)
        separator = r"[\s\-\u2010\u2011\u2012\u2013\u2014_/]*"
        *head, last = self.tokens
        if self.kind == "prefix":
            tail = re.escape(last)
            end = ""
        else:
            tail = "(?:" + "|".join(re.escape(f) for f in sorted(plural_forms(last),
                                                                   key=len, reverse=True)) + ")"
            end = r"(?![^\W_])"  # an underscore separates words, as in the normal form
        body = separator.join([*(re.escape(t) for t in head), tail])
        return re.compile(r"(?<![^\W_])" + body + end, re.IGNORECASE)


def plural_forms(token: str) -> frozenset[str]:
    """A word and its simple plural, or its singular when written as a plural."""
    if not token[-1:].isalnum():
        return frozenset({token})
    if len(token) > 3 and token.endswith("ies"):
        return frozenset({token[:-3] + "y", token})
    if len(token) > 4 and token.endswith("es"):  # caches -> cache, matches -> match
        return frozenset({token, token[:-1], token[:-2]})
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is", "as")):
        return frozenset({token, token[:-1]})
    if token.endswith(("s", "x", "z", "ch", "sh")):
        return frozenset({token, token + "es"})
    if len(token) > 2 and token.endswith("y") and token[-2] not in "aeiou":
        return frozenset({token, token[:-1] + "ies"})
    return frozenset({token, token + "s"})


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


def parse_term(text: str) -> Term:
    """Parse one term; raise TermError with the reason when it cannot be used."""
    raw = text.strip()
    field = None
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
