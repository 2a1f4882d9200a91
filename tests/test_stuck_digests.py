"""Fixing a channel fixes its stuck digests: refused recipients, corrected settings, drop.

Each case runs `paper-digest run --once` against real servers on 127.0.0.1 (aiosmtpd for
mail, a local HTTP server for the Slack webhook) and a real SQLite store.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from email.policy import default as default_policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from conftest import SAMPLES, Route, free_port, write_config

from digest.cli import main
from digest.store import Store
from digest.store.db import unpack_payload

pytestmark = pytest.mark.integration

RSS = SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"


class PickySmtp:
    """Accepts mail, but answers RCPT for the addresses in ``refuse`` with a chosen code."""

    def __init__(self) -> None:
        self.refuse: dict[str, str] = {}
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[PickySmtp, int]]:
    handler = PickySmtp()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def config(tmp_path: Path, *, channel: str, names: str = '"mail"') -> Path:
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 0
timeout_seconds = 2
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{RSS}"
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA", "quantization"]
channels = [{names}]
{channel}
""")


def mail(port: int, to: str) -> str:
    return f"""
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
from = "digest@example.org"
to = [{to}]
"""


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def run(path: Path, capsys) -> tuple[int, str]:
    return cli(capsys, "run", "--once", "--config", str(path))


def status(path: Path, capsys) -> tuple[int, str]:
    return cli(capsys, "status", "--config", str(path))


def message_id(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=default_policy)["Message-ID"])


def test_a_recipient_refused_for_now_is_shown_and_retried_alone(tmp_path, capsys, smtp):
    handler, port = smtp
    handler.refuse["b@example.org"] = "450 mailbox busy"
    path = config(tmp_path, channel=mail(port, '"a@example.org", "b@example.org"'))

    code, out = run(path, capsys)
    assert code == 1
    assert "efficient-llms -> mail: 5 papers, sent" in out
    assert "refused by b@example.org (450 mailbox busy)" in out
    assert [rcpts for rcpts, _ in handler.messages] == [["a@example.org"]]

    code, out = status(path, capsys)
    assert code == 1
    assert "b@example.org did not get digest 1 (450 mailbox busy); retried next run" in out

    handler.refuse.clear()
    code, out = run(path, capsys)
    assert code == 0, out
    assert [rcpts for rcpts, _ in handler.messages] == [["a@example.org"], ["b@example.org"]]
    first, second = (raw for _, raw in handler.messages)
    assert message_id(first) == message_id(second)  # the same digest, not a new one
    assert status(path, capsys)[0] == 0

    code, out = run(path, capsys)
    assert len(handler.messages) == 2  # nobody gets it a third time


def test_a_recipient_refused_for_good_stays_red_until_dropped(tmp_path, capsys, smtp):
    handler, port = smtp
    handler.refuse["gone@example.org"] = "550 no such user"
    path = config(tmp_path, channel=mail(port, '"a@example.org", "gone@example.org"'))
    assert run(path, capsys)[0] == 1
    run(path, capsys)
    assert len(handler.messages) == 1  # a 5xx refusal is not retried

    code, out = status(path, capsys)
    assert code == 1 and "gone@example.org did not get digest 1 (550 no such user)" in out
    assert "'paper-digest drop 1'" in out

    code, out = cli(capsys, "drop", "--config", str(path), "1")
    assert code == 0 and "its refused recipients will not get it" in out
    assert status(path, capsys)[0] == 0


def test_a_digest_refused_for_good_goes_to_the_corrected_address(tmp_path, capsys, smtp):
    handler, port = smtp
    handler.refuse["typo@exmaple.org"] = "550 no such domain"
    path = config(tmp_path, channel=mail(port, '"typo@exmaple.org"'))
    code, out = run(path, capsys)
    assert code == 1 and "failed_permanent" in out and handler.messages == []
    run(path, capsys)
    assert handler.messages == []  # not retried while the channel is unchanged

    path.write_text(path.read_text().replace("typo@exmaple.org", "team@example.org"))
    code, out = run(path, capsys)
    assert code == 0, out
    assert "sending it again with the corrected ones" in out
    ((rcpts, raw),) = handler.messages
    assert rcpts == ["team@example.org"]
    message = email.message_from_bytes(raw, policy=default_policy)
    assert message["To"] == "team@example.org"
    with Store.open(tmp_path / "digest.db") as store:
        (payload,) = [r[0] for r in store.db.execute("SELECT payload FROM digests")]
        assert len(store.delivered_keys("mail")) == 5
    # the digest recorded first, content unchanged
    assert message_id(raw) in unpack_payload(payload)["message"]


def test_a_slack_digest_stuck_on_a_gone_hook_goes_to_the_new_hook(tmp_path, capsys,
                                                                  http_server, monkeypatch):
    old = http_server.route("/hooks/old", Route(status=404, body=b"no_service"))
    new = http_server.route("/hooks/new", Route(status=200, body=b"ok"))
    monkeypatch.setenv("HOOK", old)
    path = config(tmp_path, names='"chat"', channel="""
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""")
    code, out = run(path, capsys)
    assert code == 1 and "failed_permanent" in out and "webhook is gone" in out
    monkeypatch.setenv("HOOK", new)
    code, out = run(path, capsys)
    assert code == 0, out
    assert len(http_server.hits("/hooks/new")) >= 1
    with Store.open(tmp_path / "digest.db") as store:
        assert len(store.delivered_keys("chat")) == 5
        assert store.db.execute("SELECT count(*) FROM digests").fetchone()[0] == 1


@pytest.mark.parametrize(("skip", "due_again"), [
    pytest.param(False, True, id="papers-due-again"),
    pytest.param(True, False, id="papers-skipped"),
])
def test_dropping_a_stuck_digest(tmp_path, capsys, smtp, skip, due_again):
    handler, port = smtp
    handler.refuse["team@example.org"] = "550 mailbox disabled"
    path = config(tmp_path, channel=mail(port, '"team@example.org"'))
    assert run(path, capsys)[0] == 1
    code, out = status(path, capsys)
    assert code == 1 and "stuck digests (drop with 'paper-digest drop ID'): 1" in out

    args = ["drop", "--config", str(path), "--channel", "mail"] + (["--skip"] if skip else [])
    code, out = cli(capsys, *args)
    assert code == 0
    assert ("will never be sent to mail" in out) == skip
    handler.refuse.clear()  # the mailbox works again; the config never changed
    code, out = run(path, capsys)
    assert code == 0
    assert (len(handler.messages) == 1) == due_again
    if due_again:
        assert "efficient-llms -> mail: 5 papers, sent" in out
    with Store.open(tmp_path / "digest.db") as store:
        assert len(store.delivered_keys("mail")) == (5 if due_again else 0)
        assert store.open_digests() == []


def test_drop_refuses_an_id_that_is_not_stuck(tmp_path, capsys, smtp):
    _, port = smtp
    path = config(tmp_path, channel=mail(port, '"team@example.org"'))
    assert run(path, capsys)[0] == 0
    code, out = cli(capsys, "drop", "--config", str(path), "1")
    assert code == 1 and "not a stuck digest: 1" in out
