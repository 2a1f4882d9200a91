"""Any RSS or Atom feed (through feedparser) and JSON Feed 1.x.

feedparser only ever receives bytes; fetching stays in ``digest.http``. arXiv ids and DOIs
found in links, guids or dc:identifier give papers the same identity as elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import feedparser

from digest import options as opt
from digest.config import SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.models import Paper, normalise_doi, paper_key, parse_arxiv_id
from digest.sources.base import (
    Batch,
    SourceState,
    clean_text,
    json_kind,
    json_names,
    json_str,
    listed_authors,
    load_json,
    parse_timestamp,
    parse_xml,
    prepare_xml,
    strip_html,
)

log = logging.getLogger(__name__)


def parse(content: bytes, *, source: str = "feed") -> list[Paper]:
    if content.lstrip()[:1] == b"{":
        return parse_json_feed(content, source=source)
    # feedparser does not refuse entity declarations; check the XML safely first.
    content = prepare_xml(content, what="feed")
    parse_xml(content, what="feed")
    parsed = feedparser.parse(content)
    if parsed.bozo and not parsed.entries:
        raise ParseError(f"feed: cannot parse ({parsed.get('bozo_exception')})")
    return [_entry(e, source) for e in parsed.entries]


def _entry(entry: Any, source: str) -> Paper:
    link = clean_text(entry.get("link"))
    guid = clean_text(entry.get("id"))
    doi = None
    for candidate in (entry.get("dc_identifier"), entry.get("prism_doi"), guid, link):
        if candidate and (found := normalise_doi(str(candidate))):
            doi = found
            break
    parsed = parse_arxiv_id(guid) or parse_arxiv_id(link)
    if parsed is None and doi and doi.startswith("10.48550/arxiv."):
        parsed = parse_arxiv_id(doi)
    arxiv_id, version = parsed if parsed else (None, None)
    title = clean_text(entry.get("title"))
    authors = tuple(clean_text(a.get("name")) for a in entry.get("authors", [])
                    if a.get("name"))
    if not authors and entry.get("author"):
        authors = (clean_text(entry.get("author")),)
    if len(authors) == 1:  # bioRxiv's RSS writes every author into one dc:creator
        authors = listed_authors(authors[0]) or authors
    published = None
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if stamp:
        year, month, day, hour, minute, second = stamp[:6]
        try:
            published = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:  # feedparser passes on years such as 0 and 10000
            published = None
    categories = tuple(clean_text(t.get("term")) for t in entry.get("tags", []) if t.get("term"))
    return Paper(
        key=paper_key(arxiv_id=arxiv_id, doi=doi, guid=guid, link=link, title=title,
                      authors=authors),
        title=title,
        url=link,
        abstract=strip_html(entry.get("summary")),
        authors=authors,
        arxiv_id=arxiv_id,
        version=version,
        doi=doi,
        categories=categories,
        published=published,
        source=source,
    )


def parse_json_feed(content: bytes, *, source: str = "feed") -> list[Paper]:
    """Papers of a JSON Feed 1.x document.

    A field of the wrong type is ignored; an item that yields no paper is skipped with a
    warning; a document in which no item yields one is a ParseError.
    """
    data = load_json(content, what="JSON Feed", source=source)
    if not isinstance(data, dict):
        raise ParseError(f"JSON Feed: expected a JSON object, got {json_kind(data)}",
                         source=source)
    if not json_str(data.get("version")).startswith("https://jsonfeed.org/version/"):
        raise ParseError("JSON Feed: missing or unknown 'version'", source=source)
    items = data.get("items")
    if not isinstance(items, list):
        raise ParseError(f"JSON Feed: 'items' must be a list, got {json_kind(items)}",
                         source=source)
    feed_authors = _json_authors(data)
    papers = []
    problem = ""
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            problem = f"item {number} is {json_kind(item)}, not an object"
        elif (paper := _json_item(item, feed_authors, source)) is None:
            problem = f"item {number} has no title, text, url or id"
        else:
            papers.append(paper)
            continue
        log.warning("source=%s JSON Feed %s; skipped", source, problem)
    if items and not papers:
        raise ParseError(f"JSON Feed: none of the {len(items)} items yields a paper ({problem})",
                         source=source)
    return papers


def _json_authors(holder: dict[str, Any]) -> tuple[str, ...]:
    """Names from 'authors' (JSON Feed 1.1), else from the single 'author' of 1.0."""
    return json_names(holder.get("authors")) or json_names([holder.get("author")])


def _json_item(item: dict[str, Any], feed_authors: tuple[str, ...], source: str) -> Paper | None:
    link = clean_text(json_str(item.get("url")) or json_str(item.get("external_url")))
    raw_id = item.get("id")
    # JSON Feed 1.0 tells readers to turn a numeric id into a string.
    if isinstance(raw_id, int | float) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    guid = clean_text(json_str(raw_id))
    parsed = parse_arxiv_id(link) if link else None
    arxiv_id, version = parsed if parsed else (None, None)
    text = json_str(item.get("content_text")) or strip_html(json_str(item.get("content_html")))
    summary = json_str(item.get("summary"))
    title = clean_text(json_str(item.get("title"))) or clean_text(summary) or \
        clean_text(text)[:120]
    if not (title or link or guid):
        return None
    authors = _json_authors(item) or feed_authors
    tags = item.get("tags")
    return Paper(
        # A JSON Feed id is only unique within its feed, so the link comes first.
        key=paper_key(arxiv_id=arxiv_id, link=link,
                      guid=f"{source}:{guid}" if guid and not link else None,
                      title=title, authors=authors),
        title=title,
        url=link,
        abstract=clean_text(summary or text),
        authors=authors,
        arxiv_id=arxiv_id,
        version=version,
        categories=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        published=parse_timestamp(json_str(item.get("date_published"))),
        source=source,
    )


@dataclass(frozen=True)
class FeedOptions(opt.KindOptions):
    """A feed has nothing of its own beyond the shared keys; its url is required."""

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> FeedOptions:
        if "url" not in table:
            reader.problem(f"{path}.url", "is required for kind feed")
        return cls()


class FeedSource:
    """A generic feed, fetched with conditional requests (ETag / Last-Modified)."""

    kind = "feed"
    Options: ClassVar[type[opt.KindOptions]] = FeedOptions

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.url = settings.url or ""

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch:
        with fetcher.get(self.url, etag=state.etag, last_modified=state.last_modified,
                         source=self.settings.name,
                         headers=self.settings.request_headers()) as fetched:
            if fetched.not_modified:
                return Batch(state=state, not_modified=True)
            return Batch(papers=parse(fetched.content, source=self.settings.name),
                         state=SourceState(etag=fetched.etag,
                                           last_modified=fetched.last_modified))
