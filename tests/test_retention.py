"""Retention on a real SQLite file with a fake clock: what is pruned, what must stay."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.cli import main
from digest.config import load_settings
from digest.deliver.base import Composed
from digest.errors import ConfigError
from digest.models import Digest, Match, Paper
from digest.pipeline import Seams, run_once
from digest.sources.base import SourceState
from digest.store import Store
from digest.store.db import PRUNED_PAYLOAD, run_lock, unpack_payload

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
FEED = "https://blog.example/feed"


def rss(*items: tuple[str, int, str]) -> bytes:
    """A plain RSS feed listing arXiv papers by (id, version, title)."""
    body = "".join(
        f"<item><title>{title}</title><link>https://arxiv.org/abs/{i}v{v}</link>"
        f"<description>About {title}.</description><guid>https://arxiv.org/abs/{i}v{v}</guid>"
        f"</item>" for i, v, title in items)
    return f"<rss version='2.0'><channel><title>b</title>{body}</channel></rss>".encode()


class RecordingChannel:
    """Accepts every digest and remembers the papers each one carried."""

    def __init__(self, name: str, sent: dict[str, list[str]]) -> None:
        self.kind, self.name, self.sent = "fake", name, sent

    def compose(self, digest: Digest) -> Composed:
        # A payload the size of a real email, which is what makes a store large.
        return Composed({"keys": [m.paper.key for m in digest.matches],
                         "html": "<p>" + "x" * 20000 + "</p>"}, digest)

    def send(self, payload: dict[str, Any], *, parts_sent: int,
             on_part_sent: Callable[[int], None]) -> None:
        self.sent.setdefault(self.name, []).extend(payload["keys"])
        on_part_sent(1)

    def close(self) -> None:
        pass


class World:
    """A feed served in-process, channels that record, a movable clock, a real store."""

    def __init__(self, tmp_path: Path, *, keep_days: int = 30, channels: str = '"chat"') -> None:
        self.path = tmp_path / "digest.db"
        self.feed = rss()
        self.sent: dict[str, list[str]] = {}
        self.now = NOW
        self.config = tmp_path / "digest.toml"
        self.config.write_text(f"""
version = 1
[store]
path = "{self.path}"
lookback_days = 7
keep_days = {keep_days}
keep_payload_days = 3
[http]
interval_seconds = 0
max_retries = 0
[[sources]]
name = "blog"
kind = "feed"
url = "{FEED}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = [{channels}]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
[channels.later]
kind = "slack"
webhook_url_env = "HOOK"
""")

    def run(self) -> Any:
        settings = load_settings(self.config, env={"HOOK": "https://hooks.example/x"})
        seams = Seams(
            transport=httpx.MockTransport(lambda request: httpx.Response(200,
                                                                         content=self.feed)),
            sleep=lambda s: None, now=lambda: self.now,
            channel_factory=lambda c: RecordingChannel(c.name, self.sent))
        return run_once(settings, seams=seams)


def test_a_pruned_paper_listed_again_is_not_new_and_not_sent_again(tmp_path):
    world = World(tmp_path)
    world.feed = rss(("2611.00001", 1, "LoRA for everyone"))
    world.run()
    assert world.sent == {"chat": ["arxiv:2611.00001"]}

    # Forty days on, another paper arrives; the end of that run prunes the old one.
    world.now = NOW + timedelta(days=40)
    world.feed = rss(("2612.00002", 1, "LoRA again"))
    world.run()
    with Store.open(world.path) as store:
        assert store.paper("arxiv:2611.00001") is None
        assert store.counts()["digests"] == 1  # the first digest went with its paper
        assert store.counts()["pruned_papers"] == 1

    # A new version of the pruned paper is listed: known, not new, and sent to nobody,
    # not even to a channel that never had it.
    world.now = NOW + timedelta(days=41)
    world.feed = rss(("2611.00001", 2, "LoRA for everyone, revised"))
    world.config.write_text(world.config.read_text().replace(
        'channels = ["chat"]', 'channels = ["chat", "later"]'))
    report = world.run()
    assert (report.sources[0].new, report.sources[0].known) == (0, 1)
    assert world.sent == {"chat": ["arxiv:2611.00001", "arxiv:2612.00002"],
                          "later": ["arxiv:2612.00002"]}
    with Store.open(world.path) as store:
        back = store.paper("arxiv:2611.00001")
        assert back is not None and back.version == 2  # its facts are kept up to date
        assert "arxiv:2611.00001" not in {p.key for p in store.recent(world.now - timedelta(
            days=7))}


def test_without_retention_nothing_is_pruned(tmp_path):
    world = World(tmp_path, keep_days=0)
    world.feed = rss(("2611.00001", 1, "LoRA for everyone"))
    world.run()
    world.now = NOW + timedelta(days=400)
    world.run()
    with Store.open(world.path) as store:
        assert store.paper("arxiv:2611.00001") is not None
        assert store.counts()["digests"] == 1
        # Payloads have their own window, which still applies.
        payload = store.db.execute("SELECT payload FROM digests").fetchone()[0]
        assert payload == PRUNED_PAYLOAD


# ------------------------------------------------------------------ the store itself


def paper(arxiv_id: str, title: str = "A paper") -> Paper:
    return Paper(key=f"arxiv:{arxiv_id}", title=title, url=f"https://arxiv.org/abs/{arxiv_id}",
                 arxiv_id=arxiv_id, abstract="An abstract. " * 80)


def record(store: Store, now: datetime, *papers: Paper) -> None:
    store.record_batch("feed", list(papers), SourceState(), now)


def digest_of(store: Store, channel: str, now: datetime, *papers: Paper, size: int = 20000,
              html: str | None = None) -> int:
    matches = tuple(Match(paper=p, watchlist="w", score=1.0, reasons=()) for p in papers)
    digest = Digest(watchlist="w", channel=channel, created_at=now, matches=matches)
    return store.create_digest(digest, {"html": "y" * size if html is None else html}, now)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "digest.db") as opened:
        yield opened


def test_rated_seed_and_open_digest_papers_stay_and_deliveries_stay_settled(store):
    old = NOW - timedelta(days=400)
    rated, seed, waiting, sent, plain = (paper(f"2401.0000{i}") for i in range(1, 6))
    record(store, old, rated, seed, waiting, sent, plain)
    store.rate(watchlist="w", paper_key=rated.key, action="like", origin="cli", now=old)
    open_id = digest_of(store, "chat", old, waiting)
    store.mark_failed(open_id, "HTTP 503", permanent=False, now=old)
    sent_id = digest_of(store, "chat", old, sent)
    store.mark_sent(sent_id, old)

    pruned = store.prune(NOW, keep_days=365, keep_payload_days=30, keep=[seed.key])

    assert (pruned.papers, pruned.digests) == (2, 1)  # `sent` with its digest, and `plain`
    assert set(store.papers([p.key for p in (rated, seed, waiting, sent, plain)])) == {
        rated.key, seed.key, waiting.key}
    assert store.ratings() == {"w": {rated.key: 1}}
    [still_open] = store.open_digests()
    assert still_open.id == open_id and still_open.payload == {"html": "y" * 20000}
    # The delivery outlived its digest and its paper: the channel never gets it again.
    assert store.db.execute("SELECT reason FROM settled_papers WHERE channel = 'chat' "
                            "AND paper_key = ?", [sent.key]).fetchone() == ("delivered",)
    record(store, NOW, sent)
    assert sent.key not in store.candidate_keys("chat", NOW - timedelta(days=7))
    assert store.prune(NOW, keep_days=365, keep_payload_days=30, keep=[seed.key]).papers == 0


def test_payloads_shrink_after_their_window_unless_a_recipient_waits(store):
    sent_at = NOW - timedelta(days=40)
    a, b = paper("2610.00001"), paper("2610.00002")
    record(store, sent_at, a, b)
    done = digest_of(store, "mail", sent_at, a)
    store.mark_sent(done, sent_at)
    refused = digest_of(store, "mail", sent_at, b)
    store.mark_sent(refused, sent_at, refused={"x@example.org": (False, "451 try later")})

    pruned = store.prune(NOW, keep_days=365, keep_payload_days=30)

    assert (pruned.papers, pruned.digests, pruned.payloads) == (0, 0, 1)
    payloads = dict(store.db.execute("SELECT id, payload FROM digests").fetchall())
    assert unpack_payload(payloads[done]) == json.loads(PRUNED_PAYLOAD)
    # The digest and its delivery stay, so 'explain' still says where the paper went.
    assert [d[0] for d in store.deliveries_of(a.key)] == ["mail"]
    # The refused recipient is sent the same digest next run: its payload must be whole.
    [(retry, recipients)] = store.recipient_retries(["mail"])
    assert retry.id == refused and retry.payload == {"html": "y" * 20000}
    assert recipients == ["x@example.org"]


def test_pruning_and_vacuum_shrink_the_file(tmp_path):
    path = tmp_path / "digest.db"
    with Store.open(path) as store:
        for day in range(60):
            when = NOW - timedelta(days=500 - day)
            papers = [paper(f"2401.{day:02d}{i:03d}") for i in range(20)]
            record(store, when, *papers)
            # compresses as little as HTML does: the store keeps payloads compressed
            noise = random.Random(day).randbytes(40000).hex()
            store.mark_sent(digest_of(store, "chat", when, *papers, html=noise), when)
        store.vacuum()
        before = store.size_on_disk()
        pruned = store.prune(NOW, keep_days=365, keep_payload_days=30)
        store.vacuum()
        after = store.size_on_disk()
        assert (pruned.papers, pruned.digests) == (1200, 60)
        assert store.counts()["papers"] == 0
        assert not path.with_name(path.name + "-wal").stat().st_size  # checkpointed
    assert after < before / 10, (before, after)


# ------------------------------------------------------------------ config and commands


MINIMAL = """
[[sources]]
name = "blog"
kind = "feed"
url = "https://blog.example/feed"
[[watchlists]]
name = "w"
keywords = ["LoRA"]
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
"""


def test_keep_days_defaults_and_must_outlast_the_lookback(tmp_path):
    path = tmp_path / "digest.toml"
    path.write_text("version = 1\n" + MINIMAL)
    defaults = load_settings(path).store
    assert (defaults.keep_days, defaults.keep_payload_days) == (365, 30)
    path.write_text("version = 1\n[store]\nlookback_days = 14\nkeep_days = 10\n" + MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [
        ("store.keep_days", "must be 0 (keep everything) or more than lookback_days (14)")]


def old_store(tmp_path: Path) -> Path:
    config = tmp_path / "digest.toml"
    config.write_text(f'version = 1\n[store]\npath = "{tmp_path / "digest.db"}"\n' + MINIMAL)
    with Store.open(tmp_path / "digest.db") as store:
        for day in range(10):
            when = NOW - timedelta(days=500 - day)
            papers = [paper(f"2401.{day:02d}{i:03d}") for i in range(20)]
            record(store, when, *papers)
            noise = random.Random(day).randbytes(40000).hex()  # compresses as little as HTML
            store.mark_sent(digest_of(store, "chat", when, *papers, html=noise), when)
    return config


def test_compact_prunes_then_gives_the_space_back(tmp_path, capsys):
    config = old_store(tmp_path)
    assert main(["compact", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "pruned 200 papers, 10 digests and 0 payloads" in out
    with Store.open(tmp_path / "digest.db") as store:
        assert store.counts()["papers"] == 0
        after = store.size_on_disk()
    number, unit = re.search(r"([\d.]+) (KB|MB) before", out).groups()
    assert after < float(number) * {"KB": 1024, "MB": 1024 ** 2}[unit] / 4


def test_compact_waits_for_no_run(tmp_path, capsys):
    config = old_store(tmp_path)
    with run_lock(tmp_path / "digest.db"):
        assert main(["compact", "--config", str(config)]) == 3
    assert "another paper-digest run" in capsys.readouterr().err
    with Store.open(tmp_path / "digest.db") as store:
        assert store.counts()["papers"] == 200  # nothing was pruned meanwhile


def test_status_reports_size_and_counts(tmp_path, capsys):
    config = old_store(tmp_path)
    main(["status", "--config", str(config)])
    out = capsys.readouterr().out
    with Store.open(tmp_path / "digest.db") as store:
        size = store.size_on_disk()
    line = next(x for x in out.splitlines() if "size on disk" in x)
    shown = f"{size / 1024:.1f} KB" if size < 1024 ** 2 else f"{size / 1024 ** 2:.1f} MB"
    assert f"{shown} (file and -wal)" in line
    assert "200 papers, 10 digests, 200 deliveries, 0 papers pruned" in line
    assert "keeps 365 days, payloads 30 days" in line
