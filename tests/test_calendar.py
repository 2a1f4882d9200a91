"""arXiv's calendar, and what an empty arXiv feed means on each kind of day.

The calendar is checked against dates whose weekday and daylight saving are known (Nov
2026 is EST, UTC-5; Aug 2026 is EDT, UTC-4; 26 Nov 2026 is Thanksgiving). Empty feeds are
served by a real HTTP server: arXiv's own captured empty feeds, and feeds the test writes.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import ROOT, Route, write_config

from digest.calendar import Calendar, day_label, parse_holidays
from digest.cli import format_report, main
from digest.config import ARXIV_KEYS, arxiv_holidays, load_settings, parse_settings
from digest.deliver.base import Composed
from digest.errors import ConfigError
from digest.pipeline import Seams, run_once
from digest.store import Store


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


SHIPPED = Calendar(arxiv_holidays())


# ------------------------------------------------------------------ the calendar itself


@pytest.mark.parametrize("moment, day, at", [
    pytest.param(utc(2026, 11, 20, 12), date(2026, 11, 19), utc(2026, 11, 20, 1),
                 id="friday-morning-has-thursdays"),
    pytest.param(utc(2026, 11, 23, 0, 59), date(2026, 11, 19), utc(2026, 11, 20, 1),
                 id="sunday-19:59-still-thursdays"),
    pytest.param(utc(2026, 11, 23, 1, 0), date(2026, 11, 22), utc(2026, 11, 23, 1),
                 id="sunday-20:00-announces"),
    pytest.param(utc(2026, 11, 27, 12), date(2026, 11, 25), utc(2026, 11, 26, 1),
                 id="thanksgiving-skipped"),
    pytest.param(utc(2026, 8, 1, 12), date(2026, 7, 30), utc(2026, 7, 31, 0),
                 id="summer-time-20:00-is-00:00-utc"),
])
def test_latest_announcement(moment, day, at):
    latest = SHIPPED.latest_announcement(moment)
    assert (latest.day, latest.at) == (day, at)


@pytest.mark.parametrize("day, announces", [
    (date(2026, 11, 22), True),   # Sunday
    (date(2026, 11, 24), True),   # Tuesday
    (date(2026, 11, 26), False),  # Thanksgiving, from the shipped schedule
    (date(2026, 11, 27), False),  # Friday
    (date(2026, 11, 28), False),  # Saturday
    (date(2025, 7, 6), False),    # a Sunday arXiv listed as a holiday
    (date(2026, 12, 29), False),  # end-of-year break
])
def test_announcement_dates(day, announces):
    assert SHIPPED.is_announcement_date(day) is announces


def test_extra_holidays_move_the_latest_announcement():
    calendar = Calendar(arxiv_holidays() | {date(2026, 11, 25)})
    assert calendar.latest_announcement(utc(2026, 11, 27, 12)).day == date(2026, 11, 24)


def test_announcements_between_skip_weekends_and_holidays():
    days = [a.day for a in SHIPPED.announcements_between(utc(2026, 11, 20, 12),
                                                         utc(2026, 11, 30, 12))]
    assert days == [date(2026, 11, 22), date(2026, 11, 23), date(2026, 11, 24),
                    date(2026, 11, 25), date(2026, 11, 29)]


@pytest.mark.parametrize("moment, due", [
    pytest.param(utc(2026, 8, 1, 8), None, id="saturday"),
    pytest.param(utc(2026, 8, 2, 12), None, id="sunday-before-20:00"),
    pytest.param(utc(2026, 11, 23, 12), date(2026, 11, 22), id="monday-holds-sunday"),
    pytest.param(utc(2026, 11, 25, 12), date(2026, 11, 24), id="wednesday-holds-tuesday"),
    pytest.param(utc(2026, 11, 27, 12), None, id="friday-after-thanksgiving"),
    pytest.param(utc(2026, 11, 23, 5, 30), None, id="monday-00:30-may-be-sundays-feed"),
    pytest.param(utc(2026, 11, 23, 7, 30), date(2026, 11, 22), id="monday-02:30"),
    pytest.param(utc(2026, 11, 24, 5, 30), date(2026, 11, 23), id="tuesday-00:30"),
])
def test_what_the_feed_must_hold(moment, due):
    listing = SHIPPED.due_listing(moment)
    assert (listing.day if listing else None) == due


@pytest.mark.parametrize("moment, why", [
    (utc(2026, 8, 1, 8), "Saturday"),
    (utc(2026, 8, 2, 12), "Sunday"),
    (utc(2026, 11, 27, 12), "holiday: Thu 26 Nov"),
])
def test_why_a_feed_is_silent(moment, why):
    assert SHIPPED.why_silent(moment) == why


def test_listings_missed_between_two_reads():
    missed = SHIPPED.listing_missed(utc(2026, 11, 20, 12), utc(2026, 11, 25, 12))
    assert [a.label for a in missed] == ["Sun 22 Nov", "Mon 23 Nov", "Tue 24 Nov"]


def test_submission_windows_follow_arxivs_deadlines():
    sunday, monday = SHIPPED.announcement(date(2026, 11, 22)), SHIPPED.announcement(
        date(2026, 11, 23))
    # Sunday's announcement takes Thursday 14:00 to Friday 14:00 (EST: 19:00 UTC)
    assert SHIPPED.submission_window(sunday, sunday) == (utc(2026, 11, 19, 19),
                                                         utc(2026, 11, 20, 19))
    assert SHIPPED.submission_window(sunday, monday) == (utc(2026, 11, 19, 19),
                                                         utc(2026, 11, 23, 19))
    # after Thanksgiving, Sunday's announcement takes Wednesday 14:00 to Friday 14:00
    after = SHIPPED.announcement(date(2026, 11, 29))
    assert SHIPPED.submission_window(after, after) == (utc(2026, 11, 25, 19),
                                                       utc(2026, 11, 27, 19))


def test_day_labels():
    assert day_label(date(2026, 11, 24)) == "Tue 24 Nov"


# ------------------------------------------------------------------ the shipped schedule


def test_the_shipped_schedule_reads_cleanly_and_says_where_it_comes_from():
    text = (ROOT / "digest" / "data" / "arxiv_holidays.txt").read_text()
    days, problems = parse_holidays(text)
    assert problems == []
    assert days == arxiv_holidays()
    assert {date(2025, 11, 27), date(2026, 11, 26), date(2026, 12, 31)} <= days
    assert "info.arxiv.org/help/availability" in text and "extra_holidays" in text
    # the weekday written beside each date is the date's own
    for line in text.splitlines():
        if found := re.match(r"^(\d{4}-\d{2}-\d{2})\s+(\w{3})\b", line):
            assert date.fromisoformat(found.group(1)).strftime("%a") == found.group(2)


def test_a_holiday_list_names_its_bad_lines():
    days, problems = parse_holidays("# c\n2026-12-31 Thu\n2026-02-30\nsoon\n")
    assert days == {date(2026, 12, 31)}
    assert [n for n, _ in problems] == [3, 4]


# ------------------------------------------------------------------ configuration

BASE = """version = 1
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "w"
keywords = ["x"]
channels = ["m"]
[channels.m]
kind = "slack"
webhook_url_env = "HOOK"
"""


def test_arxiv_settings_default_and_add_to_the_shipped_schedule():
    assert parse_settings(BASE, path=Path("c")).arxiv.catch_up_days == 7
    settings = parse_settings(BASE + '[arxiv]\nextra_holidays = ["2027-01-01"]\n'
                              "catch_up_days = 0\n", path=Path("c"))
    assert settings.arxiv.catch_up_days == 0
    assert settings.arxiv.holidays == arxiv_holidays() | {date(2027, 1, 1)}


def test_bad_arxiv_settings_name_their_key_paths():
    with pytest.raises(ConfigError) as caught:
        parse_settings(BASE + '[arxiv]\nextra_holidays = ["2027-02-30", "20270101", 5]\n'
                       "catch_up_days = 99\nholidays = []\n", path=Path("c"))
    problems = dict(caught.value.problems)
    assert problems["arxiv.extra_holidays[0]"].startswith("must be a date YYYY-MM-DD")
    assert problems["arxiv.extra_holidays[1]"].startswith("must be a date YYYY-MM-DD")
    assert problems["arxiv.extra_holidays[2]"] == "must be a string, got an integer"
    assert problems["arxiv.catch_up_days"] == "must be 0-60"
    assert problems["arxiv.holidays"] == "unknown key (did you mean 'extra_holidays'?)"


def test_the_arxiv_keys_and_heartbeat_are_documented():
    example = (ROOT / "config" / "digest.example.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    for key in (*ARXIV_KEYS, "heartbeat"):
        assert re.search(rf"^\s*#?\s*{key}\s*=", example, flags=re.MULTILINE), key
        assert f"`{key}`" in readme, key
    assert "[arxiv]" in example and "## Silence, holidays and gaps" in readme
    assert load_settings(ROOT / "config" / "digest.example.toml", env={}).arxiv.catch_up_days


# ------------------------------------------------------------------ empty feeds judged


class Notes:
    """A channel that keeps what each digest told the reader."""

    def __init__(self) -> None:
        self.digests: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def __call__(self, settings):
        channel = self

        class Fake:
            def compose(self, digest):
                channel.digests.append((tuple(m.paper.key for m in digest.matches),
                                        digest.notes))
                return Composed({"kind": "fake"}, digest)

            def send(self, payload, *, parts_sent, on_part_sent):
                on_part_sent(1)

            def close(self):
                pass

        return Fake()


def empty_feed() -> bytes:
    return (b"<?xml version='1.0' encoding='UTF-8'?><rss version='2.0'><channel>"
            b"<title>cs.CL updates on arXiv.org</title></channel></rss>")


BLOG = (b"<rss version='2.0'><channel><title>b</title><item><title>LoRA notes</title>"
        b"<link>https://blog.example/1</link><guid>b1</guid><description>x</description>"
        b"</item></channel></rss>")


def run_against(tmp_path, http_server, feed: bytes, now: datetime):
    arxiv = http_server.route("/rss/cs.CL", Route(body=feed))
    blog = http_server.route("/blog", Route(body=BLOG))
    config = write_config(tmp_path, f"""
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
url = "{arxiv}"
[[sources]]
name = "blog"
kind = "feed"
url = "{blog}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""")
    notes = Notes()
    settings = load_settings(config, env={"HOOK": "https://hooks.example/x"})
    report = run_once(settings, seams=Seams(now=lambda: now, sleep=lambda s: None,
                                            channel_factory=notes))
    return config, report, notes


def test_arxivs_saturday_feed_is_no_announcement_not_a_failure(tmp_path, http_server, real):
    feed = real("arxiv_rss_empty_cs.CL_saturday_2026-08-01.xml")
    assert b"<skipDays>" in feed  # arXiv itself says the feed is not refreshed on weekends
    # the moment arXiv built it: 00:00 US Eastern on Saturday
    config, report, notes = run_against(tmp_path, http_server, feed, utc(2026, 8, 1, 4, 0, 14))
    arxiv = report.sources[0]
    assert arxiv.error is None and report.ok
    assert arxiv.note == "no arXiv announcement today (Saturday)"
    assert "  arxiv: 0 read, 0 new, 0 already known; no arXiv announcement today (Saturday)" \
        in format_report(report).splitlines()
    # the digest of the other source tells the reader why arXiv is absent
    assert notes.digests == [(("guid:b1",), ("arxiv: no arXiv announcement today (Saturday).",))]
    with Store.open(tmp_path / "digest.db") as store:
        assert store.last_success("arxiv") == utc(2026, 8, 1, 4, 0, 14)


def test_an_empty_feed_on_an_announcement_day_is_a_failure(tmp_path, http_server, real,
                                                           capsys):
    # arXiv's test archive is always empty; read on Thursday 28 Nov 2024, the feed of that
    # day should hold Wednesday's announcement
    feed = real("arxiv_rss_empty_test-archive_2024-11-28.xml")
    config, report, notes = run_against(tmp_path, http_server, feed,
                                        utc(2024, 11, 28, 17, 23, 8))
    arxiv = report.sources[0]
    assert arxiv.error == "arXiv sent an empty feed on an announcement day (Wed 27 Nov)"
    assert arxiv.note is None and not report.ok
    assert "  arxiv: FAILED arXiv sent an empty feed on an announcement day (Wed 27 Nov)" \
        in format_report(report).splitlines()
    assert notes.digests[0][1] == (
        "arxiv could not be read in the latest run (arXiv sent an empty feed on an "
        "announcement day (Wed 27 Nov)); its new papers will follow once it can.",)
    assert main(["status", "--config", str(config)]) == 1
    assert ("arxiv: FAILING, 1 run in a row since last success never: arXiv sent an "
            "empty feed on an announcement day (Wed 27 Nov)") in capsys.readouterr().out


@pytest.mark.parametrize("now, error, note", [
    pytest.param(utc(2026, 11, 25, 12), "arXiv sent an empty feed on an announcement day "
                 "(Tue 24 Nov)", None, id="wednesday"),
    pytest.param(utc(2026, 11, 27, 12), None, "no arXiv announcement today (holiday: Thu 26 "
                 "Nov)", id="after-thanksgiving"),
    pytest.param(utc(2026, 11, 29, 12), None, "no arXiv announcement today (Sunday)",
                 id="sunday"),
])
def test_a_written_empty_feed_on_each_kind_of_day(tmp_path, http_server, now, error, note):
    _, report, _ = run_against(tmp_path, http_server, empty_feed(), now)
    assert (report.sources[0].error, report.sources[0].note) == (error, note)


def test_an_extra_holiday_turns_a_failure_into_no_announcement(tmp_path, http_server):
    config, _, _ = run_against(tmp_path, http_server, empty_feed(), utc(2026, 11, 25, 12))
    text = config.read_text().replace("[arxiv]\ncatch_up_days = 0",
                                      '[arxiv]\ncatch_up_days = 0\n'
                                      'extra_holidays = ["2026-11-24"]')
    config.write_text(text)
    settings = load_settings(config, env={"HOOK": "https://hooks.example/x"})
    report = run_once(settings, seams=Seams(now=lambda: utc(2026, 11, 25, 13),
                                            sleep=lambda s: None, channel_factory=Notes()))
    assert report.sources[0].error is None
    assert report.sources[0].note == "no arXiv announcement today (holiday: Tue 24 Nov)"


def test_a_listing_whose_entries_were_all_skipped_is_not_empty(tmp_path, http_server):
    replaced = (b"<rss version='2.0'><channel><title>cs.CL</title><item><title>T</title>"
                b"<link>https://arxiv.org/abs/2611.00001</link><guid>oai:arXiv.org:2611."
                b"00001v2</guid><description>arXiv:2611.00001v2 Announce Type: replace "
                b"Abstract: a</description></item></channel></rss>")
    _, report, _ = run_against(tmp_path, http_server, replaced, utc(2026, 11, 25, 12))
    assert (report.sources[0].skipped, report.sources[0].error) == (1, None)


def test_a_local_file_is_never_judged_by_the_calendar(tmp_path):
    feed = tmp_path / "feed.xml"
    feed.write_bytes(empty_feed())
    config = write_config(tmp_path, BASE.replace('categories = ["cs.CL"]',
                                                 f'categories = ["cs.CL"]\nurl = "{feed}"')
                          .replace("version = 1\n", ""))
    settings = load_settings(config, env={"HOOK": "https://hooks.example/x"})
    report = run_once(settings, seams=Seams(now=lambda: utc(2026, 11, 25, 12),
                                            channel_factory=Notes()))
    assert (report.sources[0].error, report.sources[0].note) == (None, None)


def test_status_says_when_arxiv_is_silent_and_when_it_speaks_next(tmp_path, http_server,
                                                                  monkeypatch, capsys):
    saturday = utc(2026, 11, 28, 12)
    config, report, _ = run_against(tmp_path, http_server, empty_feed(), saturday)
    assert report.ok

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return saturday if tz else saturday.replace(tzinfo=None)

    monkeypatch.setattr("digest.cli.datetime", Frozen)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert ("    no arXiv announcement today (Saturday); the next is Sun 29 Nov at 20:00 US "
            "Eastern") in out.splitlines()
