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
from digest.feedback import LinkSigner
from digest.models import Digest, unpack_payload
from digest.pipeline import Seams, run_once
from digest.render import Renderer, templates_dir

pytestmark = pytest.mark.integration

RSS = SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"
KEYWORDS = ['"LoRA"', '"language"', '"quantization"', '"model"', '"cache", "attention"',
            '"learning"', '"training"', '"data"', '"text"', '"task"', '"performance"']


def _mail(number: int, port: int, to: str = "") -> str:
    """An email channel ``mail<number>`` on the local SMTP server; ``to`` as TOML items."""
    return f"""
[channels.mail{number}]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
from = "digest@example.org"
to = [{to or f'"team{number}@example.org"'}]
timeout_seconds = 5
"""


def _config(tmp_path: Path, port: int) -> Path:
    # w0 and w1 share a channel: the second is planned only once the first is recorded.
    # Those that match nothing send a heartbeat, which is recorded among the rest.
    # max_papers 2 cuts most digests, so each names its "N more" page by the id it will
    # get, which must hold while later digests are being composed ahead of it.
    watchlists = "".join(f"""
[[watchlists]]
name = "w{i}"
keywords = [{words}]
max_papers = 2
heartbeat = true
channels = ["mail{max(i, 1)}"]
""" for i, words in enumerate(KEYWORDS))
    watchlists += """
[[watchlists]]
name = "quiet"
keywords = ["zzz-no-such-word"]
heartbeat = true
channels = ["mail99"]
"""
    channels = "".join(_mail(i, port) for i in [*range(1, len(KEYWORDS)), 99])
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


def _payloads(folder: Path) -> list[dict]:
    """Each digest's payload as the store keeps it, in the order recorded."""
    with sqlite3.connect(load_settings(folder / "digest.toml").store.path) as db:
        return [unpack_payload(row[0])
                for row in db.execute("SELECT payload FROM digests ORDER BY id")]


def _body(payload: dict) -> tuple:
    """What a stored email says: its addresses, subject, and its parts' text."""
    message = email.message_from_string(payload["message"], policy=default_policy)
    return (payload["to"], payload["subject"],
            *(message.get_body((kind,)).get_content()  # type: ignore[union-attr]
              for kind in ("plain", "html")))


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
    assert len(here) == len(statuses) >= 12
    assert ("quiet", "mail99", "sent") in statuses  # a heartbeat goes out among the rest
    # The same digests under the same ids, with the same papers and the same left out.
    assert here == apart
    assert sum(1 for row in here if row[4]) >= 3  # several were cut: their ids were named
    # The same emails, their "N more" links naming the same digest ids.
    assert mail_here == mail_apart and len(mail_here) == len(statuses)
    # Stored as sent, whichever process packed them for the store.
    stored_here, stored_apart = (_payloads(tmp_path / side) for side in ("here", "apart"))
    assert len(stored_apart) == len(statuses)
    assert [_body(p) for p in stored_here] == [_body(p) for p in stored_apart]
    assert [(p["to"][0], p["subject"]) for p in stored_apart] == [
        (to, subject) for to, subject, *_ in mail_apart]
    assert any(re.search(r"/more/", html) for *_, html in mail_here)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("failing", ["w2", "w3", "w6"])
def test_a_template_that_fails_for_one_digest_costs_only_that_digest(
        tmp_path, smtp_server, monkeypatch, failing, workers):
    monkeypatch.setenv("COMPOSER_WEB_KEY", "k" * 40)
    inbox, port = smtp_server
    templates = tmp_path / "templates"
    shutil.copytree(templates_dir(), templates)
    page = templates / "email" / "digest.html.j2"
    page.write_text(page.read_text().replace(
        "<h1>{{ watchlist }}</h1>",
        f'<h1>{{{{ watchlist }}}}{{% if watchlist == "{failing}" %}}{{{{ no_such_value }}}}'
        '{% endif %}</h1>'))
    config = _config(tmp_path, port)
    report = run_once(load_settings(config), seams=Seams(compose_workers=workers,
                                                         renderer=Renderer(templates)))
    failed = [d for d in report.deliveries if d.status != "sent"]
    assert [(d.watchlist, d.status) for d in failed] == [(failing, "failed_temporary")]
    error = failed[0].error or ""
    assert "cannot compose: UndefinedError" in error and "no_such_value" in error
    assert len(inbox.messages) == len(report.deliveries) - 1 >= 10
    assert f"team{failing[1:]}@example.org" not in {message[0] for message in _received(inbox)}
    # Nothing of it was recorded (the next run composes it again); each other digest is
    # recorded under the id its "N more" link names.
    recorded = _recorded(config)
    assert failing not in {row[2] for row in recorded}
    links = [re.findall(r'href="https://digest.example.org/more/([^"]+)"', html)
             for *_, html in _received(inbox)]
    named = {LinkSigner("k" * 40).verify_more(token[0]).digest_id  # type: ignore[union-attr]
             for token in links if token}
    assert len(named) >= 3 and named <= {row[0] for row in recorded}


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


def _two_channels(tmp_path: Path, port: int, to: tuple[str, ...] = ()) -> Path:
    recipients = ", ".join(f'"{r}"' for r in to)
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
[[sources]]
name = "local-copy"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{RSS}"
""" + "".join(f"""
[[watchlists]]
name = "w{i}"
keywords = ["model"]
channels = ["mail{i}"]
{_mail(i, port, recipients)}""" for i in range(1 if to else 2)))


def test_ctrl_c_while_an_email_travels_still_records_it_once_accepted(tmp_path, smtp_server):
    import _thread
    import smtplib
    import time

    inbox, port = smtp_server
    config = _two_channels(tmp_path, port)

    class Slow(smtplib.SMTP):
        def sendmail(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if not inbox.messages:
                time.sleep(0.3)
                _thread.interrupt_main()  # Ctrl-C while the run waits for this email
                time.sleep(0.3)
            return super().sendmail(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        run_once(load_settings(config), seams=Seams(smtp_factory=Slow))
    assert [message[1] for message in inbox.messages] == [["team0@example.org"]]
    statuses = {(row[1], row[3]) for row in _recorded(config)}
    assert ("mail0", "sent") in statuses  # accepted, so recorded: not sent again


def test_a_stop_asked_while_composing_ahead_sends_nothing_more(tmp_path, smtp_server,
                                                               monkeypatch):
    import threading

    monkeypatch.setenv("COMPOSER_WEB_KEY", "k" * 40)
    inbox, port = smtp_server
    stop = threading.Event()
    before: list[int] = []

    def progress(line: str) -> None:
        if line.startswith("composing w8 ") and not stop.is_set():
            before.append(len(inbox.messages))
            stop.set()

    report = run_once(load_settings(_config(tmp_path, port)),
                      seams=Seams(stop=stop, compose_workers=1), progress=progress)
    assert report.interrupted and before and before[0] >= 2
    # At most the email already on its way when stop was asked; none composed ahead.
    assert len(inbox.messages) - before[0] <= 1
    assert len(_recorded(tmp_path / "digest.toml")) == len(inbox.messages)


def test_refused_recipients_of_the_last_resent_digest_are_retried_in_that_run(tmp_path):
    import smtplib

    from aiosmtpd.controller import Controller
    from conftest import free_port

    class Refusing(SmtpInbox):
        async def handle_RCPT(self, server, session, envelope, address,  # noqa: N802
                              rcpt_options):  # type: ignore[no-untyped-def]
            if address.startswith("busy@"):
                return "450 mailbox busy"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    class Down(smtplib.SMTP):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise ConnectionRefusedError("down")

    port = free_port()
    controller = Controller(Refusing(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = _two_channels(tmp_path, port, to=("a@example.org", "busy@example.org"))
        first = run_once(load_settings(config), seams=Seams(smtp_factory=Down))
        assert [d.status for d in first.deliveries] == ["failed_temporary"]
        second = run_once(load_settings(config))
    finally:
        controller.stop()
    # Sent again to all (busy@ refused), then busy@ tried once more in the same run.
    assert [(d.resent, d.status, d.refused) for d in second.deliveries] == [
        (True, "sent", ("busy@example.org",)),
        (True, "failed_temporary", ("busy@example.org",))]


def test_ctrl_c_reaches_the_run_not_its_workers(tmp_path):
    import os
    import signal

    settings = load_settings(_config(tmp_path, 25))
    composer = Composer(channel=lambda name: pytest.fail("composed here"),  # type: ignore
                        settings=settings.channels, http=settings.http, renderer=Renderer(),
                        web_base_url=None, workers=1)
    try:
        composer.submit("mail1", _digest("w1", "mail1")).result()
        for process in list(composer._pool._processes.values()):  # type: ignore[union-attr]
            os.kill(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C would
        payload = composer.submit("mail2", _digest("w2", "mail2")).result().payload
        assert payload["to"] == ["team2@example.org"] and composer.workers == 1
    finally:
        composer.close()


@pytest.mark.parametrize(("quota", "cpus"), [("200000 100000", 2), ("50000 100000", 1),
                                             ("max 100000", None), ("", None)])
def test_a_container_quota_bounds_the_workers(tmp_path, quota, cpus):
    import os

    from digest.composer import usable_cpus

    quota_file = tmp_path / "cpu.max"
    quota_file.write_text(quota)
    free = len(os.sched_getaffinity(0))
    assert usable_cpus(quota_file) == (min(cpus, free) if cpus else free)


def test_a_machine_where_no_worker_can_start_composes_here(tmp_path, monkeypatch, caplog):
    import concurrent.futures

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(38, "Function not implemented")  # as without /dev/shm

    monkeypatch.setattr(concurrent.futures.ProcessPoolExecutor, "__init__", refuse)
    settings = load_settings(_config(tmp_path, 25))
    renderer = Renderer()
    context = ChannelContext(http=settings.http, renderer=renderer)
    composer = Composer(channel=lambda name: CHANNELS["email"].create(
                            settings.channels[name], context),
                        settings=settings.channels, http=settings.http, renderer=renderer,
                        web_base_url=None, workers=2)
    payload = composer.submit("mail2", _digest("w2", "mail2")).result().payload
    assert payload["to"] == ["team2@example.org"]
    assert composer.workers == 0 and composer.ahead == 0
    assert "no worker process can start" in caplog.text


def test_only_digests_a_worker_could_compose_count_towards_starting_workers(tmp_path):
    from digest.composer import composed_apart

    settings = load_settings(write_config(tmp_path, """
[[sources]]
name = "local-copy"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "https://rss.arxiv.org/rss/cs.CL"
[[watchlists]]
name = "both"
keywords = ["LoRA"]
channels = ["mail", "chat"]
[[watchlists]]
name = "chat-only"
keywords = ["LoRA"]
channels = ["chat"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
from = "digest@example.org"
to = ["team@example.org"]
[channels.chat]
kind = "slack"
webhook_url_env = "COMPOSER_SLACK_HOOK"
"""))
    assert composed_apart(settings, settings.watchlists) == 1
