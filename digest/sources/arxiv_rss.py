"""arXiv listing feeds (rss.arxiv.org/rss/<cat>+<cat>), parsed with lxml.

feedparser drops ``arxiv:announce_type`` and is far slower on a full day's listing, so
this format is read directly. Listings are empty on weekends and holidays: the source
reports an empty listing as it is, and the pipeline judges it against arXiv's calendar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from lxml import etree

from digest import options as opt
from digest.config import SourceSettings, arxiv_archives, listing_category
from digest.errors import ParseError
from digest.http import Fetcher
from digest.models import Paper, paper_key, parse_arxiv_id
from digest.sources.base import (
    Batch,
    SourceState,
    clean_text,
    parse_timestamp,
    parse_xml,
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


def parse(content: bytes, *, source: str = "arxiv_rss") -> list[Paper]:
    """Every item of an arXiv RSS listing, whatever its announce type."""
    root = parse_xml(content, what="arXiv RSS")
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        raise ParseError(f"arXiv RSS: expected <rss><channel>, got <{root.tag}>")
    title = channel.findtext("title") or ""
    if title.startswith("Feed error"):
        reason = clean_text(channel.findtext("description")) or title
        raise ParseError(f"arXiv RSS reports an error: {reason}")
    return [_item(item, source) for item in channel.iterfind("item")]


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
        fetched = fetcher.get(self.url, etag=state.etag, last_modified=state.last_modified,
                              source=self.settings.name,
                              headers=self.settings.request_headers())
        if fetched.not_modified:
            return Batch(state=state, not_modified=True)
        papers = parse(fetched.content, source=self.settings.name)
        wanted = set(self.options.announce_types)
        kept = [p for p in papers if p.announce_type in wanted]
        return Batch(papers=kept, skipped=len(papers) - len(kept),
                     state=SourceState(etag=fetched.etag, last_modified=fetched.last_modified))
