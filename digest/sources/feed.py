"""Any RSS or Atom feed (through feedparser) and JSON Feed 1.x.

feedparser only ever receives bytes; fetching stays in ``digest.http``. arXiv ids and DOIs
found in links, guids or dc:identifier give papers the same identity as elsewhere.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import feedparser

from digest.config import SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.models import Paper, normalise_doi, paper_key, parse_arxiv_id
from digest.sources.base import (
    Batch,
    SourceState,
    clean_text,
    parse_timestamp,
    parse_xml,
    prepare_xml,
    strip_html,
)


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
    published = None
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if stamp:
        year, month, day, hour, minute, second = stamp[:6]
        published = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
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
    try:
        data = json.loads(content.decode("utf-8", errors="replace"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"JSON Feed: not JSON ({exc})") from exc
    if not isinstance(data, dict) or not str(data.get("version", "")).startswith(
            "https://jsonfeed.org/version/"):
        raise ParseError("JSON Feed: missing or unknown 'version'")
    items = data.get("items")
    if not isinstance(items, list):
        raise ParseError("JSON Feed: 'items' must be a list")
    feed_authors = data.get("authors") or ([data["author"]] if data.get("author") else [])
    papers = []
    for item in items:
        if not isinstance(item, dict):
            continue
        link = clean_text(item.get("url") or item.get("external_url"))
        guid = clean_text(str(item.get("id") or ""))
        parsed = parse_arxiv_id(link) if link else None
        arxiv_id, version = parsed if parsed else (None, None)
        text = item.get("content_text") or strip_html(item.get("content_html"))
        title = clean_text(item.get("title")) or clean_text(item.get("summary")) or \
            clean_text(text)[:120]
        item_authors = item.get("authors") or ([item["author"]] if item.get("author") else [])
        authors = tuple(clean_text(a.get("name")) for a in (item_authors or feed_authors)
                        if isinstance(a, dict) and a.get("name"))
        published = parse_timestamp(item.get("date_published"))
        papers.append(Paper(
            # A JSON Feed id is only unique within its feed, so the link comes first.
            key=paper_key(arxiv_id=arxiv_id, link=link,
                          guid=f"{source}:{guid}" if guid and not link else None,
                          title=title, authors=authors),
            title=title,
            url=link,
            abstract=clean_text(item.get("summary") or text),
            authors=authors,
            arxiv_id=arxiv_id,
            version=version,
            categories=tuple(str(t) for t in item.get("tags") or [] if isinstance(t, str)),
            published=published,
            source=source,
        ))
    return papers


class FeedSource:
    """A generic feed, fetched with conditional requests (ETag / Last-Modified)."""

    kind = "feed"

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.url = settings.url or ""

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch:
        fetched = fetcher.get(self.url, etag=state.etag, last_modified=state.last_modified,
                              source=self.settings.name)
        if fetched.not_modified:
            return Batch(state=state, not_modified=True)
        return Batch(papers=parse(fetched.content, source=self.settings.name),
                     state=SourceState(etag=fetched.etag, last_modified=fetched.last_modified))
