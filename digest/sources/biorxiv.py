"""bioRxiv and medRxiv preprints through api.biorxiv.org (/details/<server>/<N>d/<cursor>/json).

A paper is its DOI without version: the newest version seen stands for it. The API writes
all authors in one string, "Last, F.; Other, A. B."; each becomes "F. Last", the order in
which watchlist authors are written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from digest import options as opt
from digest.config import SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher, is_local
from digest.models import Paper, normalise_doi, paper_key
from digest.sources.base import (
    Batch,
    SourceState,
    clean_text,
    json_kind,
    json_str,
    load_json,
    parse_timestamp,
    semicolon_authors,
)

log = logging.getLogger(__name__)

BASE_URL = "https://api.biorxiv.org/details"
SERVERS = ("biorxiv", "medrxiv")
HOSTS = {"biorxiv": "https://www.biorxiv.org", "medrxiv": "https://www.medrxiv.org"}
PAGE_SIZE = 100  # records per answer, as the API documents it
MAX_DAYS = 365
MAX_RESULTS = 100_000
WHAT = "bioRxiv API"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}$")
_NO_POSTS = "no posts found"  # the status of an interval or cursor past the end
_MAX_COUNT = 2**63 - 1  # what SQLite can store


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Page:
    """One answer: its papers (one per DOI), how many records it held, and the total."""

    papers: list[Paper]
    records: int
    total: int | None


def _count(value: object) -> int | None:
    """A count the API writes as a number or as digits in a string ("total": "522")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 0 <= value <= _MAX_COUNT:
        return value
    return None


def parse(content: bytes, *, server: str = "biorxiv", source: str = "biorxiv") -> Page:
    """Papers of one /details answer; links point to ``server``'s site.

    A field of the wrong type is left out; a record without a DOI is skipped with a
    warning; an answer whose records all fail, or that is not the API's shape, is a
    ParseError. "no posts found" is an empty page.
    """
    data = load_json(content, what=WHAT, source=source)
    if not isinstance(data, dict):
        raise ParseError(f"{WHAT}: expected a JSON object, got {json_kind(data)}", source=source)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
        raise ParseError(f"{WHAT}: no 'messages' block (got {json_kind(messages)})",
                         source=source)
    status = clean_text(json_str(messages[0].get("status")))
    if status.lower().startswith(_NO_POSTS):
        return Page(papers=[], records=0, total=0)
    if status.lower() != "ok":
        raise ParseError(f"{WHAT} reports: {status or 'no status'}", source=source)
    records = data.get("collection")
    if not isinstance(records, list):
        raise ParseError(f"{WHAT}: 'collection' must be a list, got {json_kind(records)}",
                         source=source)
    papers: list[Paper] = []
    problem = ""
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            problem = f"record {number} is {json_kind(record)}, not an object"
        elif (paper := _paper(record, server, source)) is None:
            problem = f"record {number} has no DOI"
        else:
            papers.append(paper)
            continue
        log.warning("source=%s %s; skipped", source, problem)
    if records and not papers:
        raise ParseError(f"{WHAT}: none of the {len(records)} records yields a paper "
                         f"({problem})", source=source)
    return Page(papers=newest_versions(papers), records=len(records),
                total=_count(messages[0].get("total")))


def _paper(record: dict[str, Any], server: str, source: str) -> Paper | None:
    doi = normalise_doi(clean_text(json_str(record.get("doi"))))
    if doi is None:
        return None
    version = _count(record.get("version")) or None  # "1", as the API writes it; 0 is none
    title = clean_text(json_str(record.get("title")))
    authors = semicolon_authors(json_str(record.get("authors")))
    category = clean_text(json_str(record.get("category")))
    day = clean_text(json_str(record.get("date")))
    journal_doi = normalise_doi(json_str(record.get("published")))  # "NA" when none
    host = HOSTS.get(server, HOSTS["biorxiv"])
    link = f"{host}/content/{doi}" + (f"v{version}" if version else "")
    return Paper(
        key=paper_key(doi=doi, title=title, authors=authors),
        title=title,
        url=link,
        abstract=clean_text(json_str(record.get("abstract"))),
        authors=authors,
        version=version,
        doi=doi,
        categories=(category,) if category else (),
        published=parse_timestamp(day) if _DAY.match(day) else None,
        journal_ref=f"doi:{journal_doi}" if journal_doi else None,
        source=source,
    )


def newest_versions(papers: Iterable[Paper]) -> list[Paper]:
    """One paper per key, the highest version, in the order the keys first appeared."""
    kept: dict[str, Paper] = {}
    for paper in papers:
        held = kept.get(paper.key)
        if held is None or (paper.version or 0) > (held.version or 0):
            kept[paper.key] = paper
    return list(kept.values())


# ----------------------------------------------------------------------------- options


def subject(name: str) -> str:
    """A subject as the API writes it in records: 'Cell_Biology' is 'cell biology'."""
    return " ".join(name.replace("_", " ").lower().split())


def _server(value: str) -> str | None:
    return None if value.lower() in SERVERS else f"must be one of {', '.join(SERVERS)}"


@dataclass(frozen=True)
class BiorxivOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("server", "days", "categories", "max_results")

    server: str = "biorxiv"
    days: int = 2
    categories: tuple[str, ...] = ()  # subjects as the site writes them; () is every one
    max_results: int = 1000

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> BiorxivOptions:
        d = cls()
        server = reader.value(table, "server", path, str, d.server, _server)
        categories = reader.strings(table, "categories", path)
        return cls(
            server=server.lower(),
            days=reader.value(table, "days", path, int, d.days, opt.in_range(1, MAX_DAYS)),
            categories=tuple(dict.fromkeys(subject(c) for c in categories)),
            max_results=reader.value(table, "max_results", path, int, d.max_results,
                                     opt.in_range(1, MAX_RESULTS)),
        )


# ----------------------------------------------------------------------------- fetching


class BiorxivSource:
    """The last ``days`` of one server, every subject or one query per listed subject."""

    kind = "biorxiv"
    Options: ClassVar[type[opt.KindOptions]] = BiorxivOptions

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.options: BiorxivOptions = opt.options_of(settings, BiorxivOptions)
        self.url = settings.url or BASE_URL
        self.categories = tuple(dict.fromkeys(subject(c) for c in self.options.categories))

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch:
        wanted = self.options.max_results
        # One query per subject: a few subjects cost a request or two each, where every
        # subject of two days is ten or more pages. A local file is one answer, read once.
        queries: tuple[str | None, ...] = self.categories or (None,)
        if is_local(self.url):
            queries = (None,)
        papers: list[Paper] = []
        read = 0
        for category in queries:
            if read >= wanted:
                log.warning("biorxiv source=%s max_results=%d reached; category=%s not read",
                            self.settings.name, wanted, category)
                continue
            got, records = self._query(fetcher, category, wanted - read)
            papers.extend(got)
            read += records
        papers = newest_versions(papers)
        listed = [p for p in papers if self._wanted(p)]
        if len(listed) < len(papers):
            # Not Batch.skipped: the run report words that as skipped by announce type.
            log.info("biorxiv source=%s left out %d papers of other subjects",
                     self.settings.name, len(papers) - len(listed))
        return Batch(papers=listed[:wanted])

    def _wanted(self, paper: Paper) -> bool:
        """Whether the paper is in a listed subject (always, when none is listed)."""
        return not self.categories or any(subject(c) in self.categories
                                          for c in paper.categories)

    def _query(self, fetcher: Fetcher, category: str | None, budget: int
               ) -> tuple[list[Paper], int]:
        """Pages of one query from cursor 0, until the end or ``budget`` records."""
        local = is_local(self.url)
        params: dict[str, str | int] | None = (
            {"category": category.replace(" ", "_")} if category else None)
        papers: list[Paper] = []
        cursor = 0
        while True:
            url = self.url if local else (f"{self.url.rstrip('/')}/{self.options.server}/"
                                          f"{self.options.days}d/{cursor}/json")
            with fetcher.get(url, params=params, source=self.settings.name,
                             headers=self.settings.request_headers()) as fetched:
                page = parse(fetched.content, server=self.options.server,
                             source=self.settings.name)
            papers.extend(page.papers)
            log.info("biorxiv source=%s server=%s category=%s cursor=%d got=%d total=%s",
                     self.settings.name, self.options.server, category or "all", cursor,
                     page.records, page.total)
            cursor += page.records
            # The total says where the end is (the API's page size is not relied on);
            # without one, a short page is the last.
            more = (cursor < page.total if page.total is not None
                    else page.records >= PAGE_SIZE)
            if local or page.records == 0 or not more:
                break
            if cursor >= budget:
                log.warning("biorxiv source=%s category=%s: max_results reached after %d of "
                            "%s records", self.settings.name, category or "all", cursor,
                            page.total if page.total is not None else "more")
                break
        return papers, cursor
