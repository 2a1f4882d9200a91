"""Frozen dataclasses every layer shares, and the rules that give a paper its identity."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# New-style ids (0704.0001 onwards) and old-style ids (hep-th/9901001), each with an
# optional version suffix. Anchored on what precedes an id in URLs, guids and DOIs.
_ARXIV_ID = re.compile(
    r"(?:^|[/:]|abs/|pdf/|arxiv\.)"
    r"(?P<id>\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7})"
    r"(?:v(?P<version>\d+))?(?:\.pdf)?$",
    re.IGNORECASE,
)
_DOI_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)", re.IGNORECASE)


def parse_arxiv_id(text: str) -> tuple[str, int | None] | None:
    """Return ``(id_without_version, version)`` for anything naming an arXiv paper.

    Accepts bare ids, ``oai:arXiv.org:`` guids, abs/pdf URLs and arXiv DOIs.
    """
    candidate = text.strip().rstrip("/")
    match = _ARXIV_ID.search(candidate)
    if match is None:
        return None
    version = match.group("version")
    return match.group("id"), int(version) if version else None


def normalise_doi(text: str) -> str | None:
    doi = _DOI_PREFIX.sub("", text.strip()).strip().lower()
    return doi if doi.startswith("10.") and "/" in doi else None


def paper_key(
    *,
    arxiv_id: str | None = None,
    doi: str | None = None,
    guid: str | None = None,
    link: str | None = None,
    title: str = "",
    authors: tuple[str, ...] = (),
) -> str:
    """The canonical key: arXiv id, else DOI, else guid, else link, else a content hash.

    An arXiv DOI (10.48550/arXiv.NNNN) is the arXiv paper it names.
    """
    if arxiv_id:
        return f"arxiv:{arxiv_id}"
    if doi:
        normalised = normalise_doi(doi)
        if normalised:
            if normalised.startswith("10.48550/arxiv."):
                parsed = parse_arxiv_id(normalised)
                if parsed:
                    return f"arxiv:{parsed[0]}"
            return f"doi:{normalised}"
    if guid and guid.strip():
        return f"guid:{guid.strip()}"
    if link and link.strip():
        return f"url:{link.strip()}"
    content = fold_text(title) + "\x1f" + "\x1f".join(fold_text(a) for a in authors)
    return "sha1:" + hashlib.sha1(content.encode("utf-8")).hexdigest()


def fold_text(text: str) -> str:
    """Case- and accent-insensitive form of a text, with runs of spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


@dataclass(frozen=True, slots=True)
class Paper:
    """One paper as a source saw it, or as the store knows it after merging sightings."""

    key: str
    title: str
    url: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    arxiv_id: str | None = None
    version: int | None = None
    doi: str | None = None
    categories: tuple[str, ...] = ()
    primary_category: str | None = None
    announce_type: str | None = None
    published: datetime | None = None
    upvotes: int | None = None
    comment: str | None = None
    journal_ref: str | None = None
    source: str = ""
    # What readers click besides the abstract, where a source knows it (Hugging Face does).
    hf_url: str | None = None
    code_url: str | None = None
    code_stars: int | None = None
    project_url: str | None = None
    summary: str | None = None  # a one-line summary, e.g. a machine-written TL;DR
    summary_source: str | None = None  # who wrote the summary, e.g. "Hugging Face"

    @property
    def abs_url(self) -> str:
        if self.arxiv_id:
            return f"https://arxiv.org/abs/{self.arxiv_id}"
        return self.url


@dataclass(frozen=True, slots=True)
class Reason:
    """One part of a score.

    ``kind`` is term, negative (a term that lowers), author, category, boost, similar, or
    liked / unliked (what the model learned from ratings says, for or against);
    ``field`` says where (title, abstract, authors, category, upvotes, recency, text,
    ratings), or for similar, what the paper is like: text (the seeds) or likes (the
    liked papers). For liked / unliked, ``value`` is the title of the nearest rated paper.
    """

    kind: str
    value: str
    field: str = ""
    points: float = 0.0
    count: int = 1
    weight: float = 0.0  # a term's weight as the watchlist wrote it

    def describe(self) -> str:
        if self.kind == "term":
            return f'"{self.value}" in {self.field}'
        if self.kind == "negative":
            return f'"{self.value}" in {self.field} (lowers)'
        if self.kind == "author":
            return f"author {self.value}"
        if self.kind == "similar":
            if self.field == "likes":
                return f"alike to the papers you liked ({self.value})"
            return f"like the seed papers ({self.value})"
        if self.kind == "boost":
            return self.value
        if self.says_nothing:
            return "your ratings lean neither way"
        if self.kind == "liked":
            return (f'close to "{self.value}", which you liked' if self.value
                    else "like the papers you liked")
        if self.kind == "unliked":
            return (f'close to "{self.value}", which you disliked' if self.value
                    else "unlike the papers you liked")
        return f"category {self.value}"

    @property
    def says_nothing(self) -> bool:
        """What the ratings said rounds to no points: +0.00 is not "unlike", nor "like"."""
        return self.kind in ("liked", "unliked") and abs(self.points) < 0.005


@dataclass(frozen=True, slots=True)
class Match:
    """A paper that passed a watchlist, with its score and the reasons behind it."""

    paper: Paper
    watchlist: str
    score: float
    reasons: tuple[Reason, ...]

    @property
    def matched_terms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.value for r in self.reasons if r.kind == "term"))


@dataclass(frozen=True, slots=True)
class Digest:
    """What one channel receives for one watchlist in one run: ranked matches."""

    watchlist: str
    channel: str
    matches: tuple[Match, ...]
    created_at: datetime
    notes: tuple[str, ...] = ()  # what the reader should know, e.g. a source that failed
    # One-click rating URLs by paper key, then by action (like, dislike, save); empty when
    # no public web address is configured.
    feedback: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Set on a digest without papers that tells the reader why today is quiet, e.g.
    # "nothing matched today (812 new papers read)".
    heartbeat: str | None = None
    # How many papers matched in all; more than len(matches) when max_papers or the
    # channel's size cut the digest. None: exactly the matches.
    matched: int | None = None
    timezone: str = "UTC"  # the watchlist's IANA timezone: the reader's dates are in it
    # Where the papers left out can be read now (the web app); None: the next digest.
    more_url: str | None = None

    @property
    def left_out(self) -> int:
        """Papers that matched but are not in this digest."""
        return max(0, (self.matched or 0) - len(self.matches))


@dataclass
class SourceReport:
    name: str
    read: int = 0
    new: int = 0
    known: int = 0
    skipped: int = 0
    not_modified: bool = False
    error: str | None = None
    note: str | None = None  # an empty listing explained, e.g. "no arXiv announcement today"
    catch_up: str | None = None  # the announcement days backfilled through the arXiv API
    caught_up: int = 0  # papers the catch-up added to the store
    catch_up_error: str | None = None  # the catch-up failed; its days stay pending


@dataclass
class DeliveryReport:
    watchlist: str
    channel: str
    papers: int
    status: str  # sent | failed_temporary | failed_permanent | written | dry_run
    digest_id: int | None = None
    error: str | None = None
    location: str | None = None
    resent: bool = False
    refused: tuple[str, ...] = ()  # recipients that did not accept it while others did
    heartbeat: str | None = None  # what a digest without papers told the reader


@dataclass
class WatchlistReport:
    name: str
    recent: int = 0  # papers first seen within the lookback
    matched: int = 0  # of those, the ones this watchlist matches
    unsent: int = 0  # of those, the most that one of its channels had not had yet


@dataclass
class RunReport:
    started_at: datetime
    sources: list[SourceReport] = field(default_factory=list)
    watchlists: list[WatchlistReport] = field(default_factory=list)
    deliveries: list[DeliveryReport] = field(default_factory=list)
    finished_at: datetime | None = None
    interrupted: bool = False  # asked to stop: what was not reached waits for the next run

    @property
    def ok(self) -> bool:
        return not any(s.error or s.catch_up_error for s in self.sources) and not any(
            d.status.startswith("failed") or d.refused for d in self.deliveries
        )

    @property
    def new_papers(self) -> int:
        return sum(s.new + s.caught_up for s in self.sources)


def pack_payload(payload: dict[str, Any]) -> bytes:
    """A payload as stored: JSON, compressed. A day's emails are mostly HTML repeating the
    same markup around each paper; compressed they take a fraction of the store. The
    fastest level: the higher ones cost several times the time for a few percent."""
    return zlib.compress(json.dumps(payload).encode("utf-8"), 1)


def unpack_payload(stored: str | bytes) -> dict[str, Any]:
    """A stored payload read back; stores written before compression hold plain JSON."""
    if isinstance(stored, bytes):
        stored = zlib.decompress(stored).decode("utf-8")
    payload: dict[str, Any] = json.loads(stored)
    return payload
