"""A long listing through run_once: recorded a chunk per transaction as it is read, the
source's state only after the last chunk; a run that dies between chunks loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest

from digest.config import load_settings
from digest.pipeline import Seams, run_once
from digest.sources.base import SourceState
from digest.store import Store
from digest.store.db import CHUNK

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
ITEMS = 2 * CHUNK + 234  # three chunks, the last one short
URL = "http://127.0.0.1:9/rss/cs.CL"  # on this machine: no arXiv look-ups behind it


def listing(count: int) -> bytes:
    items = "".join(
        f"<item><title>Paper {n} on adapters</title><link>https://arxiv.org/abs/2611.{n:05d}"
        f"</link><description>arXiv:2611.{n:05d}v1 Announce Type: new Abstract: Study {n}."
        f"</description><guid>oai:arXiv.org:2611.{n:05d}v1</guid><category>cs.CL</category>"
        f"<arxiv:announce_type>new</arxiv:announce_type></item>" for n in range(count))
    return ("<rss version='2.0' xmlns:arxiv='http://arxiv.org/schemas/atom'><channel>"
            f"<title>cs.CL</title>{items}</channel></rss>").encode()


class Run:
    """run_once on one arxiv_rss source served in-process, digests written to an outbox."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.requests: list[httpx.Request] = []
        self.config = tmp_path / "digest.toml"
        self.config.write_text(f"""
version = 1
[store]
path = "{tmp_path / 'digest.db'}"
[http]
interval_seconds = 0
arxiv_interval_seconds = 0
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{URL}"
[[watchlists]]
name = "adapters"
keywords = ["adapters"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "d@example.org"
to = ["t@example.org"]
""")

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("If-None-Match") == '"day-1"':
            return httpx.Response(304)
        return httpx.Response(200, content=listing(ITEMS), headers={"ETag": '"day-1"'})

    def __call__(self):
        seams = Seams(transport=httpx.MockTransport(self.handler), sleep=lambda s: None,
                      now=lambda: NOW)
        return run_once(load_settings(self.config), outbox=self.tmp_path / "out", seams=seams)

    def store(self) -> Store:
        return Store.open(self.tmp_path / "digest.db")


def watch_transactions(monkeypatch, on_enter=lambda number: None) -> list[tuple[int, bool]]:
    """Each transaction that records the source's papers, as (papers stored, state stored)
    once it committed; ``on_enter(n)`` runs as the n-th one starts."""
    seen: list[tuple[int, bool]] = []
    writing = Store.writing

    @contextmanager
    def watched(self: Store, what: str) -> Iterator[None]:
        if what != "record papers from arxiv":
            with writing(self, what):
                yield
            return
        on_enter(len(seen) + 1)
        with writing(self, what):
            yield
        state = self.db.execute("SELECT count(*) FROM source_state WHERE source = 'arxiv' "
                                "AND last_success IS NOT NULL").fetchone()[0]
        seen.append((self.papers_count(), bool(state)))

    monkeypatch.setattr(Store, "writing", watched)
    return seen


def test_a_long_listing_is_recorded_in_chunks_and_its_state_after_the_last(tmp_path,
                                                                            monkeypatch):
    run = Run(tmp_path)
    transactions = watch_transactions(monkeypatch)
    report = run()
    (source,) = report.sources
    assert (source.read, source.new, source.known, source.error) == (ITEMS, ITEMS, 0, None)
    assert transactions == [(CHUNK, False), (2 * CHUNK, False), (ITEMS, False), (ITEMS, True)]
    assert report.deliveries and report.deliveries[0].status == "written"


def test_a_run_killed_between_chunks_stores_nothing_twice_and_reads_again(tmp_path,
                                                                          monkeypatch):
    run = Run(tmp_path)

    def die_before_the_third(number: int) -> None:
        if number == 3:
            raise KeyboardInterrupt  # as a kill would: nothing after it runs

    watch_transactions(monkeypatch, die_before_the_third)
    with pytest.raises(KeyboardInterrupt):
        run()
    with run.store() as store:
        assert store.papers_count() == 2 * CHUNK  # two chunks were committed
        assert store.source_state("arxiv") == SourceState()  # but not the listing's ETag
        assert store.last_success("arxiv") is None
    monkeypatch.undo()

    again = run()
    assert "If-None-Match" not in run.requests[-1].headers  # read whole again
    (source,) = again.sources
    assert (source.read, source.new, source.known) == (ITEMS, ITEMS - 2 * CHUNK, 2 * CHUNK)
    with run.store() as store:
        assert store.papers_count() == ITEMS
        assert store.db.execute("SELECT count(*), count(DISTINCT paper_key) FROM sightings "
                                "WHERE source = 'arxiv'").fetchone() == (ITEMS, ITEMS)
        assert store.source_state("arxiv").etag == '"day-1"'
    third = run()
    assert run.requests[-1].headers["If-None-Match"] == '"day-1"'
    assert third.sources[0].not_modified and third.sources[0].new == 0
