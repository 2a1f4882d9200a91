"""Sources: one module per kind. Each fetches bytes (I/O) and parses them (no I/O).

Adding a kind is one module, one test file and one line in ``SOURCES``.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from digest.config import SourceSettings
from digest.http import Fetcher
from digest.options import KindOptions
from digest.sources import arxiv_api, arxiv_rss, biorxiv, feed, hf_daily
from digest.sources.base import Batch, Listing, SourceState


class Source(Protocol):
    kind: str
    Options: ClassVar[type[KindOptions]]  # the kind's own keys, checked and typed

    def __init__(self, settings: SourceSettings) -> None: ...

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch: ...


@runtime_checkable
class StreamingSource(Protocol):
    """A source that can also hand its listing over paper by paper (arxiv_rss, whose
    listings run to 100,000 items), so that it is recorded in chunks, never held whole."""

    def stream(self, fetcher: Fetcher, state: SourceState) -> Listing: ...


SOURCES: dict[str, type[Source]] = {
    arxiv_rss.ArxivRssSource.kind: arxiv_rss.ArxivRssSource,
    arxiv_api.ArxivApiSource.kind: arxiv_api.ArxivApiSource,
    hf_daily.HuggingFaceDailySource.kind: hf_daily.HuggingFaceDailySource,
    biorxiv.BiorxivSource.kind: biorxiv.BiorxivSource,
    feed.FeedSource.kind: feed.FeedSource,
}


def build_source(settings: SourceSettings) -> Source:
    return SOURCES[settings.kind](settings)


__all__ = ["Batch", "Listing", "SOURCES", "Source", "SourceState", "StreamingSource",
           "build_source"]
