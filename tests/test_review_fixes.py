"""Paths where two features met: offline runs, outbox runs, renamed links, references.

Each case drives the real pipeline, store and (where a user meets one) the real server.
"""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest
from conftest import SAMPLES, free_port, write_config

from digest.cli import main
from digest.config import load_settings
from digest.feedback import LinkSigner
from digest.models import Paper
from digest.pipeline import Seams, run_once
from digest.sources.base import SourceState
from digest.store import Store
from digest.web.server import start_in_background

RSS = (SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes()
KEY = "review-fixes-" + "k" * 32


def test_a_feed_on_this_machine_never_makes_catch_up_reach_arxiv(tmp_path):
    path = write_config(tmp_path, """
[http]
arxiv_interval_seconds = 0
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "http://127.0.0.1:8000/rss"
[[watchlists]]
name = "w"
keywords = ["LoRA"]
channels = ["out"]
[channels.out]
kind = "slack"
webhook_url_env = "X_HOOK"
""")
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, content=RSS) if request.url.host == "127.0.0.1" \
            else httpx.Response(503)

    settings = load_settings(path, env={"X_HOOK": "http://127.0.0.1:9/hook"})
    for day in (datetime(2026, 11, 19, 12, tzinfo=UTC), datetime(2026, 11, 24, 12, tzinfo=UTC)):
        report = run_once(settings, outbox=tmp_path / "out",
                          seams=Seams(transport=httpx.MockTransport(handler),
                                      now=lambda day=day: day, sleep=lambda seconds: None))
        assert all(not s.catch_up_error for s in report.sources)
    assert asked and all(url.startswith("http://127.0.0.1:8000/") for url in asked)


@pytest.mark.integration
def test_an_outbox_run_never_writes_to_a_recipient_waiting_for_a_retry(tmp_path, capsys):
    from aiosmtpd.controller import Controller
    from test_stuck_digests import PickySmtp, config, mail

    handler = PickySmtp()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        handler.refuse["b@example.org"] = "450 mailbox busy"
        path = config(tmp_path, channel=mail(port, '"a@example.org", "b@example.org"'))
        assert main(["run", "--once", "--config", str(path)]) == 1
        handler.refuse.clear()
        main(["run", "--once", "--config", str(path), "--outbox", str(tmp_path / "out")])
        assert [rcpts for rcpts, _ in handler.messages] == [["a@example.org"]]
        assert main(["run", "--once", "--config", str(path)]) == 0
        assert [rcpts for rcpts, _ in handler.messages] == [["a@example.org"],
                                                            ["b@example.org"]]
    finally:
        controller.stop()
    capsys.readouterr()


def test_a_paper_looked_up_for_a_like_is_never_sent_as_news(tmp_path):
    now = datetime(2026, 11, 24, 7, tzinfo=UTC)
    listed = Paper(key="arxiv:2611.00001", title="Listed", url="", arxiv_id="2611.00001")
    looked_up = Paper(key="arxiv:2611.00002", title="Looked up", url="", arxiv_id="2611.00002",
                      published=now - timedelta(days=2))
    with Store.open(tmp_path / "digest.db") as store:
        store.record_batch("feed", [listed], SourceState(), now)
        store.record_references([looked_up], now)
        since = now - timedelta(days=7)
        assert looked_up.key in {p.key for p in store.recent(since)}
        assert store.candidate_keys("mail", since) == {listed.key}
        store.record_batch("feed", [looked_up], SourceState(), now)  # a source lists it now
        assert store.candidate_keys("mail", since) == {listed.key, looked_up.key}


@pytest.mark.integration
def test_a_rating_link_made_before_a_rename_rates_the_renamed_watchlist(
        tmp_path, smtp_server, monkeypatch, capsys):
    inbox, smtp_port = smtp_server
    web_port = free_port()
    monkeypatch.setenv("REVIEW_KEY", KEY)
    body = f"""
[http]
arxiv_interval_seconds = 0
[web]
base_url = "http://127.0.0.1:{web_port}"
port = {web_port}
secret_env = "REVIEW_KEY"
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{SAMPLES / 'arxiv_rss_cs.CL+cs.LG.xml'}"
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA"]
channels = ["mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
"""
    path = write_config(tmp_path, body)
    assert main(["run", "--once", "--config", str(path)]) == 0
    (_, _, raw), = inbox.messages
    text = email.message_from_bytes(raw, policy=default_policy).get_body(("plain",))
    link = next(word for word in text.get_content().split() if "/r/" in word)
    assert LinkSigner(KEY).verify(link.rsplit("/", 1)[1]).watchlist == "efficient-llms"

    Path(path).write_text(Path(path).read_text().replace(
        'name = "efficient-llms"', 'name = "efficient"\nprevious_names = ["efficient-llms"]'))
    web = start_in_background(load_settings(path))
    try:
        assert httpx.post(link, timeout=10).status_code == 200
    finally:
        web.stop()
    with Store.open(tmp_path / "digest.db") as store:
        assert set(store.ratings()) == {"efficient"}
    capsys.readouterr()
