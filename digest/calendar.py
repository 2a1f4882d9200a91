"""arXiv's announcement calendar: which US-Eastern days announce, when, and what the RSS
feed should hold at a given moment. Pure arithmetic on dates; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("America/New_York")
ANNOUNCE_TIME = time(20, 0)  # arXiv announces at 20:00 US Eastern...
ANNOUNCE_WEEKDAYS = frozenset({6, 0, 1, 2, 3})  # ...Sunday to Thursday (date.weekday())
SUBMIT_CUTOFF = time(14, 0)  # submissions received by 14:00 on a weekday go out that evening
# The RSS feed swaps in an announcement's listing at the next midnight US Eastern, four hours
# after it is made; the grace covers a late refresh, so a feed read just after midnight is
# not called broken for still showing the day before.
RSS_REFRESH = timedelta(hours=4)
RSS_GRACE = timedelta(hours=2)
_SEARCH_LIMIT = 400  # days looked through for an announcement before giving up
_HOLIDAY_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\s|$)")


def day_label(day: date) -> str:
    """How a date is named in messages: 'Tue 24 Nov'."""
    return f"{day:%a} {day.day} {day:%b}"


def days_label(days: list[date]) -> str:
    """'announcement day Tue 24 Nov' or 'announcement days Mon 23 Nov to Tue 24 Nov'."""
    if len(days) == 1:
        return f"announcement day {day_label(days[0])}"
    return f"announcement days {day_label(days[0])} to {day_label(days[-1])}"


def eastern_date(moment: datetime) -> date:
    """The US-Eastern calendar date of a UTC moment."""
    return moment.astimezone(EASTERN).date()


def parse_holidays(text: str) -> tuple[frozenset[date], list[tuple[int, str]]]:
    """Dates from a holiday list (one YYYY-MM-DD a line, '#' comments, text after the date
    ignored), and (line number, problem) for each line that is not such a date."""
    days: set[date] = set()
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = _HOLIDAY_LINE.match(line)
        try:
            days.add(date.fromisoformat(found.group(1)) if found else date.fromisoformat(line))
        except ValueError:
            problems.append((number, f"not a date YYYY-MM-DD: {line[:40]!r}"))
    return frozenset(days), problems


@dataclass(frozen=True)
class Announcement:
    """One arXiv announcement: its US-Eastern date and the UTC instant it is made."""

    day: date
    at: datetime

    @property
    def listed_by(self) -> datetime:
        """When the RSS feed holds this announcement's listing at the latest."""
        return self.at + RSS_REFRESH + RSS_GRACE

    @property
    def label(self) -> str:
        return day_label(self.day)


class Calendar:
    """Announcement days: Sunday to Thursday at 20:00 US Eastern, except the holidays."""

    def __init__(self, holidays: Iterable[date] = ()) -> None:
        self.holidays = frozenset(holidays)

    def is_announcement_date(self, day: date) -> bool:
        """Whether arXiv announces on this US-Eastern date."""
        return day.weekday() in ANNOUNCE_WEEKDAYS and day not in self.holidays

    def announcement(self, day: date) -> Announcement:
        """The announcement of an announcement date (the instant, daylight saving included)."""
        local = datetime.combine(day, ANNOUNCE_TIME, tzinfo=EASTERN)
        return Announcement(day=day, at=local.astimezone(UTC))

    def latest_announcement(self, moment: datetime) -> Announcement:
        """The latest announcement made at or before ``moment``."""
        day = eastern_date(moment)
        for _ in range(_SEARCH_LIMIT):
            if self.is_announcement_date(day):
                found = self.announcement(day)
                if found.at <= moment:
                    return found
            day -= timedelta(days=1)
        raise ValueError(f"no arXiv announcement in the {_SEARCH_LIMIT} days before {moment}")

    def next_announcement(self, moment: datetime) -> Announcement:
        """The first announcement made after ``moment``."""
        day = eastern_date(moment)
        for _ in range(_SEARCH_LIMIT):
            if self.is_announcement_date(day):
                found = self.announcement(day)
                if found.at > moment:
                    return found
            day += timedelta(days=1)
        raise ValueError(f"no arXiv announcement in the {_SEARCH_LIMIT} days after {moment}")

    def announcements_between(self, start: datetime, end: datetime) -> list[Announcement]:
        """Announcements made after ``start`` and at or before ``end``, oldest first."""
        found = []
        day = eastern_date(start)
        while day <= eastern_date(end):
            if self.is_announcement_date(day):
                announcement = self.announcement(day)
                if start < announcement.at <= end:
                    found.append(announcement)
            day += timedelta(days=1)
        return found

    def feed_day(self, moment: datetime) -> date:
        """The US-Eastern day whose RSS feed is served at ``moment``."""
        return eastern_date(moment)

    def due_listing(self, moment: datetime) -> Announcement | None:
        """The announcement whose listing the RSS feed must hold at ``moment``; None when an
        empty feed is what the calendar expects (weekend, holiday).

        The feed of a day holds the announcement of the evening before. Just after midnight
        the feed may still be the previous day's, so an empty feed is expected then if
        either day's feed would be empty.
        """
        candidates = {self.feed_day(moment) - timedelta(days=1),
                      self.feed_day(moment - RSS_GRACE) - timedelta(days=1)}
        if not all(self.is_announcement_date(day) for day in candidates):
            return None
        return self.announcement(max(candidates))

    def why_silent(self, moment: datetime) -> str:
        """Why the RSS feed served at ``moment`` is empty by the calendar: 'Saturday', or
        'holiday: Thu 26 Nov' when the announcement before it was skipped."""
        today = self.feed_day(moment)
        evening_before = today - timedelta(days=1)
        if evening_before.weekday() in ANNOUNCE_WEEKDAYS:
            return f"holiday: {day_label(evening_before)}"
        return f"{today:%A}"

    def listing_missed(self, since: datetime, until: datetime) -> list[Announcement]:
        """Announcements whose RSS listing came and went between two reads of the feed.

        The read at ``since`` saw the listing due then; each announcement whose listing fell
        due after it and by ``until`` was in the feed at some time between the two reads.
        """
        lag = RSS_REFRESH + RSS_GRACE
        return self.announcements_between(since - lag, until - lag)

    def submission_cutoff(self, day: date) -> datetime:
        """The deadline for an announcement date: 14:00 US Eastern on the latest weekday
        (Monday to Friday) on or before it, so Sunday's is Friday's."""
        while day.weekday() > 4:
            day -= timedelta(days=1)
        return datetime.combine(day, SUBMIT_CUTOFF, tzinfo=EASTERN).astimezone(UTC)

    def submission_window(self, first: Announcement,
                          last: Announcement) -> tuple[datetime, datetime]:
        """When the new papers of announcements ``first`` to ``last`` were submitted (UTC):
        from the deadline of the announcement before ``first`` to the deadline of ``last``."""
        before = self.latest_announcement(first.at - timedelta(seconds=1))
        return self.submission_cutoff(before.day), self.submission_cutoff(last.day)
