"""Heartbeat: a watchlist that asks for it says so on a day with nothing to send.

Feeds and the Slack webhook are served by a real HTTP server, mail goes to a real SMTP
server (aiosmtpd), the store is a real SQLite file; the clock is set per run (Nov 2026 is
EST, UTC-5).
"""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.policy import default as default_policy

import pytest
from conftest import Route, free_port, write_config

from digest.cli import format_report
from digest.config import load_settings
from digest.deliver.base import Composed
from digest.deliver.slack import slack_messages
from digest.models import Digest
from digest.pipeline import Seams, run_once
from digest.render import Renderer
from digest.store import Store

FRIDAY = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # 07:00 US Eastern
SATURDAY = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def rss(*items: tuple[str, str]) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://arxiv.org/abs/{i}</link>"
        f"<description>arXiv:{i}v1 Announce Type: new Abstract: a</description>"
        f"<guid>oai:arXiv.org:{i}v1</guid><category>cs.CL</category></item>"
        for i, title in items)
    return f"<rss version='2.0'><channel><title>cs.CL</title>{body}</channel></rss>".encode()


UNRELATED = rss(("2611.00001", "Optics of lenses"), ("2611.00002", "Mirrors"))


class Install:
    """A config on real servers, run with a clock the test sets."""

    def __init__(self, tmp_path, http_server, smtp_port: int) -> None:
        self.tmp_path = tmp_path
        self.server = http_server
        self.smtp_port = smtp_port
        self.rss_url = http_server.route("/rss/cs.CL", Route(body=UNRELATED))
        self.hook = http_server.route("/services/T/B/x", Route(body=b"ok"))
        self.write()

    def write(self, smtp_port: int | None = None) -> None:
        self.config = write_config(self.tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
max_retries = 0
[arxiv]
catch_up_days = 0
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{self.rss_url}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["mail", "chat"]
heartbeat = true
[[watchlists]]
name = "quiet"
keywords = ["adapter"]
channels = ["mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port or self.smtp_port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
timeout_seconds = 5
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
timeout_seconds = 5
""")

    def feed(self, body: bytes) -> None:
        self.server.route("/rss/cs.CL", Route(body=body))

    def run(self, now: datetime):
        settings = load_settings(self.config, env={"HOOK": self.hook})
        return run_once(settings, seams=Seams(now=lambda: now, sleep=lambda s: None))

    def slack_posts(self) -> list[dict]:
        return [r.json() for r in self.server.hits("/services/T/B/x")]


@pytest.fixture
def install(tmp_path, http_server, smtp_server):
    inbox, port = smtp_server
    return Install(tmp_path, http_server, port), inbox


def mails(inbox) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(content, policy=default_policy)
            for _, _, content in inbox.messages]


def test_a_day_without_matches_gets_one_heartbeat_per_channel(install):
    setup, inbox = install
    report = setup.run(FRIDAY)
    [mail] = mails(inbox)  # the watchlist without heartbeat stays silent
    assert mail["Subject"] == "lora: nothing matched today (2 new papers read)"
    text = mail.get_body(("plain",)).get_content()
    assert "Fri 20 Nov: nothing matched today (2 new papers read)." in text
    assert "Fri 20 Nov: nothing matched today" in mail.get_body(("html",)).get_content()
    assert setup.slack_posts() == [{
        "text": "lora: nothing matched today (2 new papers read)",
        "blocks": [{"type": "section", "text": {
            "type": "mrkdwn",
            "text": "lora · Fri 20 Nov: nothing matched today (2 new papers read)."}}]}]
    assert report.ok
    assert ("  lora -> mail: heartbeat (nothing matched today (2 new papers read)), sent"
            in format_report(report).splitlines())
    with Store.open(setup.tmp_path / "digest.db") as store:
        rows = store.db.execute(
            "SELECT channel, status, (SELECT count(*) FROM digest_papers WHERE digest_id = id)"
            " FROM digests ORDER BY channel").fetchall()
    assert rows == [("chat", "sent", 0), ("mail", "sent", 0)]

    # later the same US-Eastern day: nothing more, whatever arrives that does not match
    setup.feed(rss(("2611.00003", "Prisms")))
    later = setup.run(FRIDAY.replace(hour=20))
    assert later.deliveries == [] and len(inbox.messages) == 1 and len(setup.slack_posts()) == 1


def test_the_saturday_heartbeat_says_arxiv_did_not_announce(install):
    setup, inbox = install
    setup.run(FRIDAY)
    setup.feed(b"<rss version='2.0'><channel><title>cs.CL</title></channel></rss>")
    report = setup.run(SATURDAY)
    assert report.sources[0].note == "no arXiv announcement today (Saturday)"
    saturday = mails(inbox)[-1]
    assert saturday["Subject"] == "lora: no arXiv announcement today (Saturday)"
    text = saturday.get_body(("plain",)).get_content()
    assert "Sat 21 Nov: no arXiv announcement today (Saturday)." in text
    assert "Note:" not in text  # the one line says it; no note repeats it
    assert setup.slack_posts()[-1]["blocks"][0]["text"]["text"] == (
        "lora · Sat 21 Nov: no arXiv announcement today (Saturday).")


def test_no_heartbeat_on_a_day_that_had_a_digest(install):
    setup, inbox = install
    setup.feed(rss(("2611.00009", "LoRA for speech")))
    setup.run(FRIDAY)
    assert [m["Subject"] for m in mails(inbox)] == ["lora: 1 new paper, Fri 20 Nov"]
    setup.feed(UNRELATED)
    assert setup.run(FRIDAY.replace(hour=18)).deliveries == []
    assert len(inbox.messages) == 1


def test_a_heartbeat_that_failed_is_resent_not_doubled(install):
    setup, inbox = install
    setup.write(smtp_port=free_port())  # nothing listens there: connection refused
    first = setup.run(FRIDAY)
    mail = next(d for d in first.deliveries if d.channel == "mail")
    assert (mail.status, mail.heartbeat) == ("failed_temporary",
                                             "nothing matched today (2 new papers read)")
    setup.write()
    second = setup.run(FRIDAY.replace(hour=13))
    assert [(d.channel, d.status, d.resent) for d in second.deliveries] == [
        ("mail", "sent", True)]
    [resent] = mails(inbox)
    assert resent["Subject"] == "lora: nothing matched today (2 new papers read)"
    with Store.open(setup.tmp_path / "digest.db") as store:
        assert store.db.execute("SELECT count(*) FROM digests WHERE channel = 'mail'"
                                ).fetchone() == (1,)


class Beats:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    def __call__(self, settings):
        owner = self

        class Fake:
            def compose(self, digest):
                return Composed({"kind": "fake", "heartbeat": digest.heartbeat,
                                 "channel": digest.channel}, digest)

            def send(self, payload, *, parts_sent, on_part_sent):
                owner.sent.append((payload["channel"], payload["heartbeat"]))
                on_part_sent(1)

            def close(self):
                pass

        return Fake()


@pytest.mark.parametrize("moments, beats", [
    # 18:00 and 22:00 US Eastern on Friday, though on two UTC dates: one heartbeat
    pytest.param([datetime(2026, 11, 20, 23, tzinfo=UTC), datetime(2026, 11, 21, 3, tzinfo=UTC)],
                 1, id="one-eastern-day-two-utc-days"),
    # 23:30 Friday and 00:30 Saturday US Eastern: two days, two heartbeats
    pytest.param([datetime(2026, 11, 21, 4, 30, tzinfo=UTC),
                  datetime(2026, 11, 21, 5, 30, tzinfo=UTC)], 2, id="two-eastern-days"),
])
def test_heartbeats_are_counted_per_us_eastern_day(install, moments, beats):
    setup, _ = install
    settings = load_settings(setup.config, env={"HOOK": setup.hook})
    channel = Beats()
    for moment in moments:
        run_once(settings, seams=Seams(now=lambda moment=moment: moment, sleep=lambda s: None,
                                       channel_factory=channel))
    assert len([c for c, beat in channel.sent if c == "mail" and beat]) == beats


def test_heartbeats_render_escaped():
    digest = Digest(watchlist="a<b>", channel="c", matches=(),
                    created_at=datetime(2026, 11, 24, 12, tzinfo=UTC),
                    notes=("feed <x> & *bold* failed",),
                    heartbeat="nothing matched today (0 new papers read)")
    [message] = slack_messages(digest)
    assert [b["type"] for b in message["blocks"]] == ["section"]
    assert message["blocks"][0]["text"]["text"] == (
        "a&lt;b&gt; · Tue 24 Nov: nothing matched today (0 new papers read).\n"
        "feed &lt;x&gt; &amp; \u2217bold\u2217 failed")
    text, html = Renderer().email(digest, subject="s")
    assert "Note: feed <x> & *bold* failed" in text
    assert "feed &lt;x&gt; &amp; *bold* failed" in html and "a&lt;b&gt;" in html
