"""arXiv API queries (export.arxiv.org/api/query): Atom, paged within arXiv's limits.

Both the current response shape and the pre-2025 one (namespaces declared per element,
http ids, ``scheme`` on primary_category) are read by the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from lxml import etree

from digest import options as opt
from digest.config import SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher, is_local
from digest.models import Paper, paper_key, parse_arxiv_id
from digest.sources.base import Batch, SourceState, clean_text, parse_timestamp, parse_xml

log = logging.getLogger(__name__)

BASE_URL = "https://export.arxiv.org/api/query"
MAX_RESULTS_PER_CALL = 2000  # arXiv's documented ceiling for one call
NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "arxiv": "http://arxiv.org/schemas/atom",
    "opensearch": "http://a9.com/-/spec/opensearch/1.1/",
}


def parse(content: bytes, *, source: str = "arxiv_api") -> tuple[list[Paper], int | None]:
    """Papers of one API response page, and opensearch:totalResults when present."""
    root = parse_xml(content, what="arXiv API")
    if root.tag != f"{{{NS['atom']}}}feed":
        raise ParseError(f"arXiv API: expected an Atom <feed>, got <{root.tag}>")
    total_text = root.findtext("opensearch:totalResults", namespaces=NS)
    written = (total_text or "").strip()
    # isdigit() alone takes "²", which int() refuses
    total = int(written) if written.isascii() and written.isdigit() else None
    papers = []
    for entry in root.iterfind("atom:entry", NS):
        entry_id = clean_text(entry.findtext("atom:id", namespaces=NS))
        if "/api/errors" in entry_id:
            reason = clean_text(entry.findtext("atom:summary", namespaces=NS)) or entry_id
            raise ParseError(f"arXiv API reports an error: {reason}")
        papers.append(_entry(entry, entry_id, source))
    return papers, total


def _entry(entry: etree._Element, entry_id: str, source: str) -> Paper:
    parsed = parse_arxiv_id(entry_id)
    arxiv_id, version = parsed if parsed else (None, None)
    title = clean_text(entry.findtext("atom:title", namespaces=NS))
    authors = tuple(clean_text(a.findtext("atom:name", namespaces=NS))
                    for a in entry.iterfind("atom:author", NS))
    categories = tuple(c.get("term", "") for c in entry.iterfind("atom:category", NS)
                       if c.get("term"))
    primary = entry.find("arxiv:primary_category", NS)
    primary_category = primary.get("term") if primary is not None else None
    if primary_category and primary_category not in categories:
        categories = (primary_category, *categories)
    link = entry_id
    for node in entry.iterfind("atom:link", NS):
        href = node.get("href")
        if node.get("rel") == "alternate" and href:
            link = href
    doi = clean_text(entry.findtext("arxiv:doi", namespaces=NS)) or None
    published = parse_timestamp(entry.findtext("atom:published", namespaces=NS))
    return Paper(
        key=paper_key(arxiv_id=arxiv_id, doi=doi, link=link, title=title, authors=authors),
        title=title,
        url=link,
        abstract=clean_text(entry.findtext("atom:summary", namespaces=NS)),
        authors=authors,
        arxiv_id=arxiv_id,
        version=version,
        doi=doi,
        categories=categories,
        primary_category=primary_category,
        published=published,
        comment=clean_text(entry.findtext("arxiv:comment", namespaces=NS)) or None,
        journal_ref=clean_text(entry.findtext("arxiv:journal_ref", namespaces=NS)) or None,
        source=source,
    )


LOOKUP_BATCH = 100  # ids per id_list call: short URLs, few calls


def lookup_url(sources: Iterable[SourceSettings], *, local: bool = True) -> str:
    """Where papers are looked up by id: the first arxiv_api source's URL, else arXiv's.

    A local file cannot answer an id_list query: with ``local=False`` arXiv's own URL
    stands in for it (a command the user asked for); otherwise it is returned as it is,
    so that a run on sample data stays offline and skips the lookup.
    """
    for source in sources:
        if source.kind == "arxiv_api":
            url = source.url or BASE_URL
            return BASE_URL if is_local(url) and not local else url
    return BASE_URL


def lookup(
    fetcher: Fetcher,
    ids: list[str],
    *,
    url: str = BASE_URL,
    source: str = "arxiv-lookup",
    progress: Callable[[str], None] = lambda line: None,
) -> list[Paper]:
    """The papers these arXiv ids name, asked by ``id_list`` in batches.

    Requests go through the fetcher's shared arXiv pacer; ids arXiv does not know are
    simply absent from the result.
    """
    wanted = list(dict.fromkeys(ids))
    papers: list[Paper] = []
    for start in range(0, len(wanted), LOOKUP_BATCH):
        batch = wanted[start:start + LOOKUP_BATCH]
        if len(wanted) > LOOKUP_BATCH:
            progress(f"looking up arXiv ids {start + 1}-{start + len(batch)} of {len(wanted)}")
        with fetcher.get(url, params={"id_list": ",".join(batch), "start": 0,
                                      "max_results": len(batch)}, source=source) as fetched:
            page, _ = parse(fetched.content, source=source)
        papers.extend(p for p in page if p.arxiv_id and p.title)
    return papers


@dataclass(frozen=True)
class ArxivApiOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("query", "max_results", "page_size", "sort_by")

    query: str = ""
    max_results: int = 200
    page_size: int = 100
    sort_by: str = "submittedDate"

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> ArxivApiOptions:
        d = cls()
        return cls(
            query=reader.value(table, "query", path, str, opt.MISSING,
                               lambda v: None if v.strip() else "empty query") or "",
            max_results=reader.value(table, "max_results", path, int, d.max_results,
                                     opt.in_range(1, 30000)),
            page_size=reader.value(table, "page_size", path, int, d.page_size,
                                   opt.in_range(1, MAX_RESULTS_PER_CALL)),
            sort_by=reader.value(table, "sort_by", path, str, d.sort_by,
                                 opt.one_of(("submittedDate", "lastUpdatedDate", "relevance"))),
        )


class ArxivApiSource:
    """A standing query, newest first, read in pages of at most 2000 results."""

    kind = "arxiv_api"
    Options: ClassVar[type[opt.KindOptions]] = ArxivApiOptions

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.options: ArxivApiOptions = opt.options_of(settings, ArxivApiOptions)
        self.url = settings.url or BASE_URL

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch:
        wanted = self.options.max_results
        page_size = min(self.options.page_size, MAX_RESULTS_PER_CALL, wanted)
        papers: list[Paper] = []
        start = 0
        while start < wanted:
            params: dict[str, str | int] = {
                "search_query": self.options.query,
                "start": start,
                "max_results": min(page_size, wanted - start),
                "sortBy": self.options.sort_by,
                "sortOrder": "descending",
            }
            with fetcher.get(self.url, params=params, source=self.settings.name,
                             headers=self.settings.request_headers()) as fetched:
                page, total = parse(fetched.content, source=self.settings.name)
            papers.extend(page)
            log.info("arxiv_api source=%s start=%d got=%d total=%s", self.settings.name,
                     start, len(page), total)
            start += len(page)
            done = not page or len(page) < int(params["max_results"])
            if done or (total is not None and start >= total) or is_local(self.url):
                break
        return Batch(papers=papers[:wanted])
