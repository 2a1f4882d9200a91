"""Digests composed in worker processes are the digests composed in the run's own process.

A run with many email digests has worker processes render them while it records and sends
(digest/composer.py), and sends each email while it composes the next. These tests run the
same day both ways against a real SMTP server and compare what was recorded and received,
then break the workers and a template to see that every other digest still goes out.
"""

from __future__ import annotations

import email
import re
import shutil
import sqlite3
from datetime import UTC, datetime
from email.policy import default as default_policy
from pathlib import Path

import pytest
from conftest import SAMPLES, SmtpInbox, write_config

from digest.composer import ComposeFailed, Composer
from digest.config import load_settings
from digest.deliver import CHANNELS, ChannelContext
from digest.models import Digest
from digest.pipeline import Seams, run_once
from digest.render import Renderer, templates_dir

pytestmark = pytest.mark.integration

RSS = SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"
KEYWORDS = ['"LoRA"', '"language"', '"quantization"', '"model"', '"cache", "attention"',
            '"learning"']


def _config(tmp_path: Path, port: int) -> Path:
    # w0 and w1 share a channel: the second is planned only once the first is recorded.
    # max_papers 2 cuts most digests, so each names its "N more" page by the id it will
    # get, which must hold while later digests are being composed ahead of it.
    watchlists = "".join(f"""
[[watchlists]]
name = "w{i}"
keywords = [{words}]
max_papers = 2
channels = ["mail{max(i, 1)}"]
""" for i, words in enumerate(KEYWORDS))
    watchlists += """
[[watchlists]]
name = "quiet"
keywords = ["zzz-no-such-word"]
heartbeat = true
channels = ["mail9"]
"""
    channels = "".join(f"""
[channels.mail{i}]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
from = "digest@example.org"
to = ["team{i}@example.org"]
timeout_seconds = 5
""" for i in [*range(1, len(KEYWORDS)), 9])
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
timeout_seconds = 5
[web]
base_url = "https://digest.example.org"
secret_env = "COMPOSER_WEB_KEY"
[[sources]]
name = "local-copy"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{RSS}"
{watchlists}
{channels}
""")


def _recorded(config: Path) -> list[tuple]:
    """Every digest as the store holds it, with its papers and what it left out."""
    store = load_settings(config).store.path
    with sqlite3.connect(store) as db:
        digests = db.execute("SELECT id, channel, watchlist, status, left_out FROM digests "
                             "ORDER BY id").fetchall()
        return [(*row,
                 db.execute("SELECT paper_key, rank, score FROM digest_papers "
                            "WHERE digest_id = ? ORDER BY rank", [row[0]]).fetchall(),
                 db.execute("SELECT paper_key, rank, reasons FROM digest_overflow "
                            "WHERE digest_id = ? ORDER BY rank", [row[0]]).fetchall())
                for row in digests]


def _received(inbox: SmtpInbox) -> list[tuple[str, str, str, str]]:
    """(recipient, subject, plain text, HTML) of each message, in the order received."""
    out = []
    for _, recipients, raw in inbox.messages:
        message = email.message_from_bytes(raw, policy=default_policy)
        parts = [message.get_body((kind,)) for kind in ("plain", "html")]
        assert all(part is not None for part in parts)
        out.append((recipients[0], str(message["Subject"]),
                    *(part.get_content() for part in parts)))  # type: ignore[union-attr]
    return out


def _run(tmp_path: Path, port: int, *, workers: int, at: datetime) -> tuple[list, object]:
    tmp_path.mkdir()
    config = _config(tmp_path, port)
    report = run_once(load_settings(config), seams=Seams(compose_workers=workers,
                                                         now=lambda: at))
    return _recorded(config), report


def test_workers_compose_the_digests_this_process_would(tmp_path, smtp_server, monkeypatch):
    monkeypatch.setenv("COMPOSER_WEB_KEY", "k" * 40)
    inbox, port = smtp_server
    at = datetime.now(UTC).replace(microsecond=0)
    here, report_here = _run(tmp_path / "here", port, workers=0, at=at)
    mail_here = _received(inbox)
    inbox.messages.clear()
    apart, report_apart = _run(tmp_path / "apart", port, workers=2, at=at)
    mail_apart = _received(inbox)

    statuses = [(d.watchlist, d.channel, d.status) for d in report_here.deliveries]
    assert statuses == [(d.watchlist, d.channel, d.status) for d in report_apart.deliveries]
    assert {status for _, _, status in statuses} == {"sent"}
    assert len(here) == len(statuses) >= 7
    assert ("quiet", "mail9", "sent") in statuses  # a heartbeat goes out among the rest
    # The same digests under the same ids, with the same papers and the same left out.
    assert here == apart
    assert sum(1 for row in here if row[4]) >= 3  # several were cut: their ids were named
    # The same emails, their "N more" links naming the same digest ids.
    assert mail_here == mail_apart and len(mail_here) == len(statuses)
    assert any(re.search(r"/more/", html) for *_, html in mail_here)


def test_a_template_that_fails_for_one_digest_costs_only_that_digest(
        tmp_path, smtp_server, monkeypatch):
    monkeypatch.setenv("COMPOSER_WEB_KEY", "k" * 40)
    inbox, port = smtp_server
    templates = tmp_path / "templates"
    shutil.copytree(templates_dir(), templates)
    page = templates / "email" / "digest.html.j2"
    page.write_text(page.read_text().replace(
        "<h1>{{ watchlist }}</h1>",
        '<h1>{{ watchlist }}{% if watchlist == "w3" %}{{ no_such_value }}{% endif %}</h1>'))
    config = _config(tmp_path, port)
    report = run_once(load_settings(config), seams=Seams(compose_workers=1,
                                                         renderer=Renderer(templates)))
    failed = [d for d in report.deliveries if d.status != "sent"]
    assert [(d.watchlist, d.status) for d in failed] == [("w3", "failed_temporary")]
    error = failed[0].error or ""
    assert "cannot compose: UndefinedError" in error and "no_such_value" in error
    assert len(inbox.messages) == len(report.deliveries) - 1
    assert "team3@example.org" not in {message[0] for message in _received(inbox)}
    # Nothing of it was recorded: the next run composes it again.
    assert "w3" not in {row[2] for row in _recorded(config)}


def _digest(watchlist: str, channel: str) -> Digest:
    from test_deliver_email import digest

    return Digest(watchlist=watchlist, channel=channel, matches=digest().matches,
                  created_at=datetime(2026, 11, 24, 20, tzinfo=UTC))


def test_a_worker_that_dies_leaves_its_digests_to_this_process(tmp_path):
    config = _config(tmp_path, 25)
    settings = load_settings(config)
    renderer = Renderer()
    context = ChannelContext(http=settings.http, renderer=renderer)
    made = {}

    def channel(name):
        if name not in made:
            made[name] = CHANNELS["email"].create(settings.channels[name], context)
        return made[name]

    composer = Composer(channel=channel, settings=settings.channels, http=settings.http,
                        renderer=renderer, web_base_url=None, workers=1)
    try:
        first = composer.submit("mail1", _digest("w1", "mail1"))
        assert first.result().payload["to"] == ["team1@example.org"]
        assert composer.workers == 1
        for process in list(composer._pool._processes.values()):  # type: ignore[union-attr]
            process.kill()
            process.join()
        later = [composer.submit(f"mail{i}", _digest(f"w{i}", f"mail{i}")) for i in (2, 3)]
        payloads = [job.result().payload for job in later]
    finally:
        composer.close()
    assert [p["to"] for p in payloads] == [["team2@example.org"], ["team3@example.org"]]
    here = channel("mail2").compose(_digest("w2", "mail2")).payload
    assert payloads[0]["subject"] == here["subject"]
    assert composer.workers == 0


def test_a_compose_failure_travels_back_as_one_line():
    import pickle

    failure = ComposeFailed("TemplateError: no such value")
    back = pickle.loads(pickle.dumps(failure))
    assert isinstance(back, ComposeFailed) and str(back) == "TemplateError: no such value"
