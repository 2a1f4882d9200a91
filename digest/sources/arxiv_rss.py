"""arXiv listing feeds (rss.arxiv.org/rss/<cat>+<cat>), parsed with lxml.

feedparser drops ``arxiv:announce_type`` and is far slower on a full day's listing, so
this format is read directly, item by item, so that a listing of any length is never held
whole. Listings are empty on weekends and holidays: the source reports an empty listing
as it is, and the pipeline judges it against arXiv's calendar.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any, ClassVar

from lxml import etree

from digest import options as opt
from digest.config import SourceSettings, arxiv_archives, listing_category
from digest.errors import ParseError
from digest.http import Fetcher
from digest.models import Paper, paper_key, parse_arxiv_id
from digest.sources.base import (
    Batch,
    Listing,
    SourceState,
    XmlItems,
    clean_text,
    parse_timestamp,
    split_authors,
)

BASE_URL = "https://rss.arxiv.org/rss/"
NS = {
    "arxiv": "http://arxiv.org/schemas/atom",
    "dc": "http://purl.org/dc/elements/1.1/",
}
_DESCRIPTION = re.compile(
    r"^\s*arXiv:(?P<id>\S+)\s+Announce Type:\s*(?P<type>[\w\-]+)\s*(?:Abstract:\s*)?",
    re.IGNORECASE,
)


def listing_url(categories: tuple[str, ...]) -> str:
    return BASE_URL + "+".join(categories)


def api_query(categories: tuple[str, ...]) -> str:
    """The arXiv API search_query for what this listing covers: a whole archive (cs, or
    astro-ph) is every one of its subject classes."""
    return " OR ".join(f"cat:{c}" if "." in c or c not in arxiv_archives() else f"cat:{c}.*"
                       for c in categories)


def as_listed(paper: Paper, categories: tuple[str, ...]) -> Paper:
    """A paper the API found for this listing, typed as the listing would show it: new
    when its primary category is one listed, cross when it is only cross-listed here."""
    primary = paper.primary_category or ""
    own = primary in categories or primary.split(".", 1)[0] in categories
    return replace(paper, announce_type="new" if own else "cross")


WHAT = "arXiv RSS"


def parse(content: bytes, *, source: str = "arxiv_rss") -> list[Paper]:
    """Every item of an arXiv RSS listing, whatever its announce type."""
    return list(read(io.BytesIO(content), source=source))


def read(body: IO[bytes], *, source: str = "arxiv_rss") -> Iterator[Paper]:
    """Every item of an arXiv RSS listing read from a file, one paper at a time.

    The whole document is checked first, its items dropped as they are passed (well-formed
    XML, an <rss><channel>, not arXiv's error feed), so a broken listing raises ParseError
    here and gives no paper at all; the papers are then built on a second reading.
    """
    start = body.tell()
    _channel(XmlItems(body, what=WHAT, tag="item").read_through())
    body.seek(start)
    return _papers(XmlItems(body, what=WHAT, tag="item"), source)


def _channel(root: etree._Element) -> etree._Element:
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        raise ParseError(f"arXiv RSS: expected <rss><channel>, got <{root.tag}>")
    title = channel.findtext("title") or ""
    if title.startswith("Feed error"):
        reason = clean_text(channel.findtext("description")) or title
        raise ParseError(f"arXiv RSS reports an error: {reason}")
    return channel


def _papers(items: XmlItems, source: str) -> Iterator[Paper]:
    """The items of the root's first <channel>, as the listing orders them; an <item>
    anywhere else is not the listing's."""
    channel: etree._Element | None = None
    for item in items:
        parent = item.getparent()
        if channel is None and parent is not None:
            channel = item.getroottree().getroot().find("channel")
        if channel is not None and parent is channel:
            yield _item(item, source)


def _item(item: etree._Element, source: str) -> Paper:
    description = item.findtext("description") or ""
    head = _DESCRIPTION.match(description)
    abstract = description[head.end():] if head else description
    guid = item.findtext("guid") or ""
    link = clean_text(item.findtext("link"))
    parsed = parse_arxiv_id(guid) or parse_arxiv_id(link) or (
        parse_arxiv_id(head.group("id")) if head else None)
    arxiv_id, version = parsed if parsed else (None, None)
    announce = clean_text(item.findtext("arxiv:announce_type", namespaces=NS))
    if not announce and head:
        announce = head.group("type")
    categories = tuple(clean_text(c.text) for c in item.iterfind("category") if c.text)
    doi = clean_text(item.findtext("arxiv:DOI", namespaces=NS)) or None
    published = parse_timestamp(item.findtext("pubDate"))
    title = clean_text(item.findtext("title"))
    authors = split_authors(item.findtext("dc:creator", namespaces=NS) or "")
    return Paper(
        key=paper_key(arxiv_id=arxiv_id, doi=doi, guid=guid, link=link, title=title,
                      authors=authors),
        title=title,
        url=link,
        abstract=clean_text(abstract),
        authors=authors,
        arxiv_id=arxiv_id,
        version=version,
        doi=doi,
        categories=categories,
        primary_category=categories[0] if categories else None,
        announce_type=announce.lower() or None,
        published=published,
        journal_ref=clean_text(item.findtext("arxiv:journal_reference", namespaces=NS)) or None,
        source=source,
    )


ANNOUNCE_TYPES = ("new", "cross", "replace", "replace-cross")


@dataclass(frozen=True)
class ArxivRssOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("categories", "announce_types")

    categories: tuple[str, ...] = ()
    announce_types: tuple[str, ...] = ("new", "cross")

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> ArxivRssOptions:
        # A url or categories written but refused already have their own problem.
        if not table.get("categories") and "url" not in table:
            reader.problem(f"{path}.categories", "list at least one arXiv category, like cs.CL")
        return cls(
            categories=reader.strings(table, "categories", path, check=listing_category),
            announce_types=reader.strings(table, "announce_types", path,
                                          cls.announce_types, check=opt.one_of(ANNOUNCE_TYPES)),
        )


class ArxivRssSource:
    """A daily listing for one or more categories; keeps the announce types asked for."""

    kind = "arxiv_rss"
    Options: ClassVar[type[opt.KindOptions]] = ArxivRssOptions

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.options: ArxivRssOptions = opt.options_of(settings, ArxivRssOptions)
        self.url = settings.url or listing_url(self.options.categories)

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch:
        """The whole listing at once (see ``stream`` for one paper at a time)."""
        with self.stream(fetcher, state) as listing:
            papers = list(listing.papers)
            return Batch(papers=papers, state=listing.state, not_modified=listing.not_modified,
                         skipped=listing.skipped)

    def stream(self, fetcher: Fetcher, state: SourceState) -> Listing:
        """The listing, checked whole, its papers of the announce types asked for read one
        at a time. A broken listing raises here, before any paper is read."""
        fetched = fetcher.get(self.url, etag=state.etag, last_modified=state.last_modified,
                              source=self.settings.name,
                              headers=self.settings.request_headers())
        if fetched.not_modified:
            fetched.close()
            return Listing(state=state, not_modified=True)
        try:
            papers = read(fetched.body, source=self.settings.name)
        except BaseException:
            fetched.close()
            raise
        listing = Listing(state=SourceState(etag=fetched.etag,
                                            last_modified=fetched.last_modified),
                          body=fetched.body)
        listing.papers = self._wanted(papers, listing)
        return listing

    def _wanted(self, papers: Iterator[Paper], listing: Listing) -> Iterator[Paper]:
        wanted = set(self.options.announce_types)
        for paper in papers:
            if paper.announce_type in wanted:
                listing.read += 1
                yield paper
            else:
                listing.skipped += 1
