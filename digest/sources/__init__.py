"""Sources: one module per kind. Each fetches bytes (I/O) and parses them (no I/O).

Adding a kind is one module, one test file and one line in ``SOURCES``.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from digest.config import SourceSettings
from digest.http import Fetcher
from digest.options import KindOptions
from digest.sources import arxiv_api, arxiv_rss, biorxiv, feed, hf_daily
from digest.sources.base import Batch, SourceState


class Source(Protocol):
    kind: str
    Options: ClassVar[type[KindOptions]]  # the kind's own keys, checked and typed

    def __init__(self, settings: SourceSettings) -> None: ...

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch: ...


SOURCES: dict[str, type[Source]] = {
    arxiv_rss.ArxivRssSource.kind: arxiv_rss.ArxivRssSource,
    arxiv_api.ArxivApiSource.kind: arxiv_api.ArxivApiSource,
    hf_daily.HuggingFaceDailySource.kind: hf_daily.HuggingFaceDailySource,
    biorxiv.BiorxivSource.kind: biorxiv.BiorxivSource,
    feed.FeedSource.kind: feed.FeedSource,
}


def build_source(settings: SourceSettings) -> Source:
    return SOURCES[settings.kind](settings)


__all__ = ["Batch", "SOURCES", "Source", "SourceState", "build_source"]
