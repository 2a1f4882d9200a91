"""Faults, tried against real servers on 127.0.0.1, as a user would meet them.

Each case runs `paper-digest run --once`, checks what the summary says and the exit
status, then mends the fault and checks that the next run delivers what was missed,
once. The README's fault table lists the same cases.
"""

from __future__ import annotations

import asyncio
import email
import json
from collections.abc import Iterator
from email.policy import default as default_policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import SAMPLES, Route, free_port, write_config

from digest.cli import main
from digest.store import Store

pytestmark = pytest.mark.integration

RSS = SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"


class FaultySmtp:
    """An SMTP server whose DATA reply is chosen per test: ok, a code, drop, or stall."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.mode == "drop":
            server.transport.close()
            return "250 never seen"
        if self.mode == "stall":
            await asyncio.sleep(3)
        if self.mode.isdigit():
            return f"{self.mode} fault injected by the test"
        self.messages.append(envelope.content)
        return "250 OK"


def start_smtp(handler, **kwargs) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def smtp() -> Iterator[tuple[FaultySmtp, int]]:
    handler = FaultySmtp()
    controller, port = start_smtp(handler)
    yield handler, port
    controller.stop()


def config_for(tmp_path: Path, *, sources: str, channels: str, channel_names: str) -> Path:
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 1
timeout_seconds = 1
max_body_mb = 1
{sources}
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA", "quantization"]
channels = [{channel_names}]
{channels}
""")


def mail_channel(port: int, extra: str = "") -> str:
    return f"""
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
timeout_seconds = 1
{extra}"""


LOCAL_SOURCE = f"""
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{RSS}"
"""


def run(config: Path, capsys) -> tuple[int, str]:
    status = main(["run", "--once", "--config", str(config)])
    return status, capsys.readouterr().out


def delivered(config_dir: Path, channel: str) -> list[str]:
    with Store.open(config_dir / "digest.db") as store:
        return sorted(store.delivered_keys(channel))


# ------------------------------------------------------------------------------ SMTP


@pytest.mark.parametrize(
    ("mode", "seen", "status"),
    [
        pytest.param("421", "421 fault injected", "failed_temporary", id="421"),
        pytest.param("451", "451 fault injected", "failed_temporary", id="451"),
        pytest.param("550", "550 fault injected", "failed_permanent", id="550"),
        pytest.param("drop", "closed the connection", "failed_temporary", id="dropped-in-data"),
        pytest.param("stall", "timed out", "failed_temporary", id="slower-than-timeout"),
    ],
)
def test_smtp_faults(tmp_path, capsys, smtp, mode, seen, status):
    handler, port = smtp
    config = config_for(tmp_path, sources=LOCAL_SOURCE, channels=mail_channel(port),
                        channel_names='"mail"')
    handler.mode = mode
    code, out = run(config, capsys)
    assert code == 1
    assert f"efficient-llms -> mail: 5 papers, {status}" in out and seen in out
    handler.mode = "ok"
    handler.messages.clear()
    code, out = run(config, capsys)
    if status == "failed_temporary":
        assert code == 0 and "(recorded earlier, sent again)" in out
        assert len(handler.messages) == 1
        assert len(delivered(tmp_path, "mail")) == 5
    else:  # permanent: reported once, recorded, never retried
        assert handler.messages == [] and delivered(tmp_path, "mail") == []
        with Store.open(tmp_path / "digest.db") as store:
            (row,) = store.db.execute("SELECT status, last_error FROM digests").fetchall()
        assert row[0] == "failed_permanent" and "550" in row[1]


def test_smtp_connection_dropped_in_the_middle_of_data(tmp_path, capsys, smtp):
    """A raw server that takes part of the message, then hangs up without a reply."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = []

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 test ESMTP\r\n")
            reader = conn.makefile("rb")
            while line := reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250 test\r\n")
                elif verb in (b"MAIL", b"RCPT"):
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    received.append(reader.read(512))  # part of the message, then gone
                    return

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    config = config_for(tmp_path, sources=LOCAL_SOURCE, channels=mail_channel(port),
                        channel_names='"mail"')
    code, out = run(config, capsys)
    thread.join(5)
    listener.close()
    assert code == 1 and received and received[0].startswith(b"Subject:")
    assert "efficient-llms -> mail: 5 papers, failed_temporary" in out
    assert "the server closed the connection" in out
    handler, good_port = smtp
    config.write_text(config.read_text().replace(f"smtp_port = {port}",
                                                 f"smtp_port = {good_port}"))
    code, out = run(config, capsys)
    assert code == 0 and len(handler.messages) == 1  # the same digest, whole this time


def test_smtp_connection_refused(tmp_path, capsys):
    config = config_for(tmp_path, sources=LOCAL_SOURCE, channels=mail_channel(free_port()),
                        channel_names='"mail"')
    code, out = run(config, capsys)
    assert code == 1 and "connection refused" in out and "failed_temporary" in out


def test_smtp_authentication_failure_names_the_variables(tmp_path, capsys, monkeypatch):
    handler = FaultySmtp()
    controller, port = start_smtp(
        handler, auth_require_tls=False,
        authenticator=lambda *args: AuthResult(success=False, handled=False))
    try:
        monkeypatch.setenv("T_USER", "me")
        monkeypatch.setenv("T_PASS", "wrong-password")
        config = config_for(tmp_path, sources=LOCAL_SOURCE, channel_names='"mail"',
                            channels=mail_channel(port, 'username_env = "T_USER"\n'
                                                        'password_env = "T_PASS"'))
        code, out = run(config, capsys)
    finally:
        controller.stop()
    assert code == 1
    assert "SMTP login to 127.0.0.1" in out and "$T_USER and $T_PASS" in out
    assert "wrong-password" not in out
    assert "failed_temporary" in out  # fix the password and the next run sends it


# ------------------------------------------------------------------------------ Slack

HOOK = "/services/T9/B9/hook-secret-token"


def slack_config(tmp_path, http_server, monkeypatch) -> Path:
    monkeypatch.setenv("T_HOOK", http_server.url + HOOK)
    return config_for(tmp_path, sources=LOCAL_SOURCE, channel_names='"chat"', channels="""
[channels.chat]
kind = "slack"
webhook_url_env = "T_HOOK"
timeout_seconds = 1
""")


@pytest.mark.parametrize(
    ("responses", "seen", "status", "code"),
    [
        pytest.param([Route(429, b"rate_limited", {"Retry-After": "1"}), Route(body=b"ok")],
                     "sent", "sent", 0, id="429-retry-after"),
        pytest.param([Route(500, b"internal_error")], "HTTP 500 internal_error",
                     "failed_temporary", 1, id="500"),
        pytest.param([Route(body=b"ok", delay=2.5)], "did not answer message 1/1 within 1 s",
                     "failed_temporary", 1, id="timeout"),
        pytest.param([Route(404, b"no_service")], "Slack webhook is gone", "failed_permanent",
                     1, id="404-gone"),
        pytest.param([Route(410, b"channel_is_archived")], "Slack webhook is gone",
                     "failed_permanent", 1, id="410-gone"),
    ],
)
def test_slack_faults(tmp_path, capsys, http_server, monkeypatch, responses, seen, status,
                      code):
    config = slack_config(tmp_path, http_server, monkeypatch)
    http_server.route(HOOK, *responses)
    got, out = run(config, capsys)
    assert got == code
    assert f"efficient-llms -> chat: 5 papers, {status}" in out
    assert seen in out
    assert "hook-secret-token" not in out
    posts_before = len(http_server.hits(HOOK))
    http_server.route(HOOK, Route(body=b"ok"))
    got, out = run(config, capsys)
    assert got == 0
    if status == "failed_permanent":
        assert len(http_server.hits(HOOK)) == posts_before  # a gone hook is not retried
        # once the hook is replaced, requeue sends the same digest on the next run
        assert main(["requeue", "--config", str(config), "chat"]) == 0
        assert "1 digest with 5 papers will be sent again" in capsys.readouterr().out
        got, out = run(config, capsys)
        assert got == 0 and "(recorded earlier, sent again)" in out
        assert len(delivered(tmp_path, "chat")) == 5
    else:
        assert len(delivered(tmp_path, "chat")) == 5
    titles = [json.dumps(h.json()) for h in http_server.hits(HOOK)
              if h.body and "LoRA-Flow" in json.dumps(h.json())]
    assert len(set(titles)) <= 1  # the same content, however often it had to be posted


# ------------------------------------------------------------------------------ feeds


def feed_config(tmp_path, http_server, smtp_port) -> tuple[Path, str]:
    url = http_server.url + "/rss/cs.CL"
    config = config_for(tmp_path, channels=mail_channel(smtp_port), channel_names='"mail"',
                        sources=f"""
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{url}"
{LOCAL_SOURCE.replace('"arxiv-cs"', '"local-copy"')}""")
    return config, "/rss/cs.CL"


GOOD = RSS.read_bytes()


@pytest.mark.parametrize(
    ("route", "seen"),
    [
        pytest.param(Route(500, b"oops"), "HTTP 500", id="500"),
        pytest.param(Route(body=GOOD, delay=2.5), "timed out", id="timeout"),
        pytest.param(Route(body=GOOD[: len(GOOD) // 2]), "malformed XML", id="truncated"),
        pytest.param(Route(body=b"<!DOCTYPE html><html><body><h1>Maintenance</h1></body></html>",
                           headers={"Content-Type": "text/html"}),
                     "got an HTML page", id="html-error-page"),
        pytest.param(Route(body=b"x" * (2 * 1024 * 1024)), "over the 1 MB limit",
                     id="oversized-declared"),
        pytest.param(Route(body=b"x" * (32 * 1024 * 1024), headers={"X-No-Length": "1"}),
                     "exceeds the 1 MB limit; cut off", id="oversized-streamed"),
    ],
)
def test_feed_faults_name_the_source_and_spare_the_rest(tmp_path, capsys, http_server, smtp,
                                                        route, seen):
    handler, port = smtp
    config, path = feed_config(tmp_path, http_server, port)
    http_server.route(path, route)
    code, out = run(config, capsys)
    assert code == 1
    failed = next(line for line in out.splitlines() if line.startswith("  arxiv-cs:"))
    assert "FAILED" in failed and seen in failed
    assert "local-copy: 25 read, 25 new" in out  # the other source went on
    assert len(handler.messages) == 1  # and so did the digest
    if "X-No-Length" in route.headers:  # reading stopped at the limit, not at the end
        assert route.sent < len(route.body) // 2


@pytest.mark.parametrize(
    ("body", "author"),
    [
        pytest.param(GOOD.replace(b"Mei Lin", b"Mei L\xffn"), "Mei L\ufffdn", id="invalid-utf8"),
        pytest.param(GOOD.replace(b"encoding='UTF-8'", b"encoding='ISO-8859-1'"), "Mei Lin",
                     id="wrong-charset"),
        pytest.param(GOOD.split(b"\n", 1)[1].decode().encode("latin-1", "replace"), "Mei Lin",
                     id="missing-charset"),
    ],
)
def test_feeds_with_broken_encodings_still_deliver(tmp_path, capsys, http_server, smtp, body,
                                                   author):
    handler, port = smtp
    config, path = feed_config(tmp_path, http_server, port)
    config.write_text(config.read_text().replace(LOCAL_SOURCE.replace(
        '"arxiv-cs"', '"local-copy"'), ""))
    http_server.route(path, Route(body=body, headers={"Content-Type": "application/xml"}))
    code, out = run(config, capsys)
    assert code == 0 and "arxiv-cs: 25 read, 25 new" in out
    message = email.message_from_bytes(handler.messages[0], policy=default_policy)
    assert author in message.get_body(("plain",)).get_content()


def test_status_shows_failing_sources_and_channels(tmp_path, capsys, http_server, smtp):
    handler, port = smtp
    config, path = feed_config(tmp_path, http_server, port)
    http_server.route(path, Route(500, b"oops"))
    handler.mode = "451"
    run(config, capsys)
    run(config, capsys)
    assert main(["status", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "arxiv-cs: FAILING, 2 runs in a row since last success never: HTTP 500" in out
    assert "local-copy: ok, last success" in out
    assert "mail: 1 digest, 5 papers FAILED, retried next run" in out and "451" in out
    http_server.route(path, Route(body=GOOD))
    handler.mode = "ok"
    run(config, capsys)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "arxiv-cs: ok" in out and "mail: 1 digest, 5 papers sent" in out
