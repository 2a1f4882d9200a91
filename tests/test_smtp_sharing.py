"""Channels that reach one SMTP server with the same login share one session per run."""

from __future__ import annotations

import smtplib

import pytest
from test_deliver_email import FakeSMTP, digest, settings

from digest.deliver.email import EmailChannel, SmtpConnections
from digest.errors import DeliveryError
from digest.render import Renderer


@pytest.fixture(autouse=True)
def _reset():
    FakeSMTP.instances.clear()


def channels(connections: SmtpConnections, *overrides: dict) -> list[EmailChannel]:
    return [EmailChannel(settings(name=f"c{i}", **fields), renderer=Renderer(),
                         smtp_factory=FakeSMTP, connections=connections)
            for i, fields in enumerate(overrides)]


def test_channels_on_one_server_share_a_session_and_quit_once():
    shared = SmtpConnections()
    same = channels(shared, {}, {"to": ("x@example.org",)}, {"sender": "other@example.org"})
    other = channels(shared, {"smtp_host": "relay2.example.org"})
    for channel in same + other:
        channel.send(channel.compose(digest()).payload)
    assert [smtp.host for smtp in FakeSMTP.instances] == ["127.0.0.1", "relay2.example.org"]
    first, second = FakeSMTP.instances
    assert len(first.sent) == 3 and len(second.sent) == 1
    assert first.sent[1][1] == ["x@example.org"] and first.sent[2][0] == "other@example.org"
    for channel in same[:2]:
        channel.close()
    assert not first.quit_called  # a channel still uses it
    same[2].close()
    other[0].close()
    assert first.quit_called and second.quit_called


def test_a_different_login_is_a_different_session():
    from digest.config import Secret

    shared = SmtpConnections()
    users = [{"username_env": "U", "password_env": "P", "username": Secret(user, "U"),
              "password": Secret("pw", "P")} for user in ("ana", "ben")]
    for channel in channels(shared, *users):
        channel.send(channel.compose(digest()).payload)
    assert [smtp.logged_in for smtp in FakeSMTP.instances] == [("ana", "pw"), ("ben", "pw")]


def test_a_session_the_server_closed_is_opened_again_once():
    shared = SmtpConnections()
    first, second = channels(shared, {}, {})
    first.send(first.compose(digest()).payload)
    FakeSMTP.instances[0].fail_send = smtplib.SMTPServerDisconnected("closed after 1 message")
    second.send(second.compose(digest()).payload)
    assert len(FakeSMTP.instances) == 2 and len(FakeSMTP.instances[1].sent) == 1


def test_a_fresh_session_that_fails_is_a_failure_not_a_loop():
    def broken(host, port, timeout=None):
        return FakeSMTP(host, port, timeout, fail_send=smtplib.SMTPServerDisconnected("gone"))

    channel = EmailChannel(settings(), renderer=Renderer(), smtp_factory=broken,
                           connections=SmtpConnections())
    with pytest.raises(DeliveryError, match="closed the connection"):
        channel.send(channel.compose(digest()).payload)
    assert len(FakeSMTP.instances) == 1


@pytest.mark.integration
def test_a_run_with_many_channels_on_one_real_server_opens_one_session(tmp_path, smtp_server):
    from test_faults_inputs import LOCAL_SOURCE, config_for

    from digest.config import load_settings
    from digest.pipeline import Seams, run_once

    inbox, port = smtp_server
    opened: list[smtplib.SMTP] = []

    def counting(host, port, timeout=None):
        smtp = smtplib.SMTP(host, port, timeout=timeout)
        opened.append(smtp)
        return smtp

    mail = "".join(f"""
[channels.mail{i}]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
from = "d@example.org"
to = ["team{i}@example.org"]
""" for i in range(5))
    watchlists = "".join(f"""
[[watchlists]]
name = "w{i}"
keywords = ["LoRA"]
channels = ["mail{i}"]
""" for i in range(5))
    config = config_for(tmp_path, sources=LOCAL_SOURCE, channels=mail, watchlists=watchlists)
    report = run_once(load_settings(config), seams=Seams(smtp_factory=counting))
    assert [d.status for d in report.deliveries] == ["sent"] * 5
    assert len(inbox.messages) == 5 and len(opened) == 1
