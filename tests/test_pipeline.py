"""run_once through its seams: in-process HTTP and channels, a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.config import load_settings
from digest.deliver.base import Composed
from digest.errors import ConfigError, DeliveryError
from digest.pipeline import Seams, run_once
from digest.store import Store

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def rss(*items: tuple[str, str, str]) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://arxiv.org/abs/{i}</link>"
        f"<description>arXiv:{i}v1 Announce Type: new Abstract: {abstract}</description>"
        f"<guid>oai:arXiv.org:{i}v1</guid><category>cs.CL</category>"
        f'<arxiv:announce_type xmlns:arxiv="http://arxiv.org/schemas/atom">new'
        f"</arxiv:announce_type></item>" for i, title, abstract in items)
    return f"<rss version='2.0'><channel><title>cs.CL</title>{body}</channel></rss>".encode()


class FakeChannel:
    """Records what it was asked to send; fails as scripted."""

    def __init__(self, name: str, log: dict[str, list[dict[str, Any]]],
                 failures: list[DeliveryError]) -> None:
        self.kind = "fake"
        self.name = name
        self.log = log
        self.failures = failures

    def compose(self, digest) -> Composed:
        return Composed({"kind": "fake", "keys": [m.paper.key for m in digest.matches],
                         "notes": list(digest.notes), "messages": ["m1", "m2"]}, digest)

    def send(self, payload, *, parts_sent: int, on_part_sent: Callable[[int], None]) -> None:
        for part in range(parts_sent, len(payload["messages"])):
            if self.failures:
                raise self.failures.pop(0)
            self.log.setdefault(self.name, []).append({"part": part + 1, **payload})
            on_part_sent(part + 1)

    def close(self) -> None:
        pass


class World:
    """Feeds served in-process, fake channels, a movable clock, a real store."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.feeds: dict[str, httpx.Response | Exception] = {}
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.failures: dict[str, list[DeliveryError]] = {}
        self.now = NOW
        self.config = tmp_path / "digest.toml"
        self.config.write_text(f"""
version = 1
[store]
path = "{tmp_path / 'digest.db'}"
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
max_retries = 0
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[sources]]
name = "blog"
kind = "feed"
url = "https://blog.example/feed"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["mail", "chat"]
[[watchlists]]
name = "adapters"
keywords = ["adapter"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "d@example.org"
to = ["t@example.org"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""")

    def handler(self, request: httpx.Request) -> httpx.Response:
        answer = self.feeds.get(str(request.url), httpx.Response(404))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def run(self, **kwargs) -> Any:
        settings = load_settings(self.config, env={"HOOK": "https://hooks.example/x"})
        seams = Seams(
            transport=httpx.MockTransport(self.handler), sleep=lambda s: None,
            now=lambda: self.now,
            channel_factory=lambda c: FakeChannel(c.name, self.sent,
                                                  self.failures.setdefault(c.name, [])))
        return run_once(settings, seams=seams, **kwargs)

    def keys_sent(self, channel: str) -> list[str]:
        return [k for entry in self.sent.get(channel, []) if entry["part"] == 1
                for k in entry["keys"]]


ARXIV = "https://rss.arxiv.org/rss/cs.CL"


@pytest.fixture
def world(tmp_path) -> World:
    w = World(tmp_path)
    w.feeds[ARXIV] = httpx.Response(200, content=rss(
        ("2611.00001", "LoRA for speech", "We adapt with LoRA."),
        ("2611.00002", "Adapters everywhere", "An adapter study with LoRA."),
        ("2611.00003", "Unrelated optics", "Lenses."),
        ("2611.00004", "Adapter fusion", "Mixing adapters.")))
    w.feeds["https://blog.example/feed"] = httpx.Response(200, content=b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>b</title><item><title>Our LoRA recipe</title>
<link>https://blog.example/p/1</link><guid>https://blog.example/p/1</guid>
<description>How we tune LoRA.</description></item></channel></rss>""")
    return w


def test_a_run_ingests_scores_and_delivers_once_per_channel(world):
    report = world.run()
    assert report.ok
    assert [(s.name, s.read, s.new) for s in report.sources] == [("arxiv", 4, 4), ("blog", 1, 1)]
    # 2611.00002 matches both watchlists that go to mail: it reaches mail once
    assert sorted(world.keys_sent("mail")) == ["arxiv:2611.00001", "arxiv:2611.00002",
                                               "arxiv:2611.00004",
                                               "guid:https://blog.example/p/1"]
    assert sorted(world.keys_sent("chat")) == ["arxiv:2611.00001", "arxiv:2611.00002",
                                               "guid:https://blog.example/p/1"]
    again = world.run()
    assert again.new_papers == 0 and again.deliveries == []
    assert len(world.keys_sent("mail")) == 4


def test_a_failing_source_does_not_stop_the_others(world):
    world.feeds[ARXIV] = httpx.ConnectError("refused")
    report = world.run()
    arxiv, blog = report.sources
    assert "ConnectError" in arxiv.error and blog.error is None
    assert world.keys_sent("mail") == ["guid:https://blog.example/p/1"]
    # the reader learns that a source is missing from this digest
    assert world.sent["mail"][0]["notes"] == [
        "arxiv could not be read in the latest run (ConnectError: refused); its new papers "
        "will follow once it can."]
    assert not report.ok
    with Store.open(world.tmp_path / "digest.db") as store:
        row = store.db.execute("SELECT consecutive_failures FROM source_state "
                               "WHERE source = 'arxiv'").fetchone()
    assert row == (1,)
    world.feeds[ARXIV] = httpx.Response(200, content=rss(("2611.00001", "LoRA", "x")))
    assert world.run().sources[0].new == 1  # the next run picks arXiv up
    assert world.keys_sent("mail") == ["guid:https://blog.example/p/1", "arxiv:2611.00001"]


def test_malformed_feed_is_reported_with_its_source(world):
    world.feeds["https://blog.example/feed"] = httpx.Response(200, content=b"<rss><chan")
    report = world.run()
    assert "malformed XML" in report.sources[1].error
    assert len(world.keys_sent("mail")) == 3


def test_a_temporary_failure_is_resent_next_run_with_the_same_content(world):
    world.failures["chat"] = [DeliveryError("HTTP 500", channel="chat")]
    first = world.run()
    failed = [d for d in first.deliveries if d.channel == "chat"]
    assert [d.status for d in failed] == ["failed_temporary"]
    assert world.keys_sent("mail") and not world.keys_sent("chat")
    world.now += timedelta(hours=1)
    second = world.run()
    resent = [d for d in second.deliveries if d.channel == "chat"]
    assert [(d.status, d.resent) for d in resent] == [("sent", True)]
    assert sorted(world.keys_sent("chat")) == ["arxiv:2611.00001", "arxiv:2611.00002",
                                               "guid:https://blog.example/p/1"]
    assert len(world.keys_sent("mail")) == 4  # mail got nothing twice


def test_a_partly_sent_digest_resumes_where_it_stopped(world):
    world.failures["chat"] = []
    original = FakeChannel.send

    def fail_second_part(self, payload, *, parts_sent, on_part_sent):
        if self.name == "chat" and parts_sent == 0:
            on_part_sent(1)
            raise DeliveryError("timed out", channel="chat")
        return original(self, payload, parts_sent=parts_sent, on_part_sent=on_part_sent)

    FakeChannel.send = fail_second_part
    try:
        world.run()
    finally:
        FakeChannel.send = original
    world.run()
    assert [e["part"] for e in world.sent["chat"]] == [2]


def test_a_permanent_failure_is_recorded_and_not_retried(world):
    world.failures["chat"] = [DeliveryError("hook gone", channel="chat", permanent=True)]
    first = world.run()
    assert [d.status for d in first.deliveries if d.channel == "chat"] == ["failed_permanent"]
    second = world.run()
    assert [d for d in second.deliveries if d.channel == "chat"] == []
    assert world.keys_sent("chat") == []


def test_one_temporary_failure_holds_the_channel_for_the_rest_of_the_run(world):
    world.failures["mail"] = [DeliveryError("connection refused", channel="mail")]
    report = world.run()
    mail = [d for d in report.deliveries if d.channel == "mail"]
    assert [d.status for d in mail] == ["failed_temporary", "failed_temporary"]
    assert "not tried" in mail[1].error
    world.run()
    assert len(world.keys_sent("mail")) == 4


def test_missing_secrets_stop_the_run_before_anything_is_sent(world):
    settings = load_settings(world.config, env={})
    with pytest.raises(ConfigError, match="HOOK is not set"):
        run_once(settings, seams=Seams(transport=httpx.MockTransport(world.handler)))
    assert not (world.tmp_path / "digest.db").exists()


def test_only_the_selected_watchlists_are_delivered(world):
    report = world.run(watchlists=["adapters"])
    assert [w.name for w in report.watchlists] == ["adapters"]
    assert world.keys_sent("chat") == []


def test_papers_older_than_the_lookback_are_not_sent(world):
    world.now = NOW - timedelta(days=30)
    world.failures["mail"] = [DeliveryError("down", channel="mail", permanent=True)] * 2
    world.failures["chat"] = [DeliveryError("down", channel="chat", permanent=True)]
    world.run()
    world.now = NOW
    world.feeds[ARXIV] = httpx.Response(200, content=rss(("2611.00009", "LoRA late", "x")))
    world.run()
    assert world.keys_sent("mail") == ["arxiv:2611.00009"]


def test_outbox_writes_instead_of_sending(world, tmp_path):
    settings = load_settings(world.config, env={})
    report = run_once(settings, outbox=tmp_path / "out",
                      seams=Seams(transport=httpx.MockTransport(world.handler),
                                  sleep=lambda s: None, now=lambda: NOW))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["0001-lora-mail.eml", "0001-lora-mail.html", "0002-lora-chat.json",
                     "0003-adapters-mail.eml", "0003-adapters-mail.html"]
    assert {d.status for d in report.deliveries} == {"written"}
    messages = json.loads((tmp_path / "out" / "0002-lora-chat.json").read_text())
    assert messages[0]["blocks"][0]["type"] == "header"


def test_similar_to_uses_stored_seed_papers_and_the_stores_vocabulary(world, caplog):
    world.config.write_text(world.config.read_text().replace('''[channels.mail]''', '''
[[watchlists]]
name = "like-these"
similar_to = ["2611.00001", "2611.99999"]
min_similarity = 0.3
channels = ["chat"]
[channels.mail]'''))
    world.feeds[ARXIV] = httpx.Response(200, content=rss(
        ("2611.00001", "Speech adapters with low rank", "Adapters for speech recognition."),
        ("2611.00005", "Low rank speech adapters revisited", "Speech recognition adapters."),
        ("2611.00006", "Unrelated optics", "Lenses and mirrors.")))
    report = world.run(watchlists=["like-these"])
    assert [w.matched for w in report.watchlists] == [1]  # the neighbour, not the seed itself
    # arXiv (here answering 404) did not know 2611.99999: a warning, not a failed run
    assert "cannot look up seed papers 2611.99999" in caplog.text
    assert "seed 2611.99999 is not in the store yet" in caplog.text
    assert report.ok
    sent = world.sent["chat"][0]
    assert sent["keys"] == ["arxiv:2611.00005"]
