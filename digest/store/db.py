"""Store operations. Each fact is written after it happened, in one transaction."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlite_utils

from digest.errors import LockedError, StoreError
from digest.models import (
    Digest,
    Match,
    Paper,
    Reason,
    normalise_doi,
    pack_payload,
    parse_arxiv_id,
    unpack_payload,
)
from digest.sources.base import SourceState
from digest.store.schema import migrate

log = logging.getLogger(__name__)

# Papers merged per read of their stored rows, and recorded per transaction by
# record_listing: a chunk's papers and rows stay small, and a 100,000-item listing costs
# 200 commits. Also under SQLite's limit on the values of one statement.
CHUNK = 500
# The share of the store's papers that may come, go or change before the word counts that
# similar_to and likes are weighed by are taken anew (see Store.term_weights): until then
# they are those of a store that differs from today's by no more than that, and exactly
# those that the kept matches were scored under.
TERM_WEIGHTS_DRIFT = 0.05
# The delivery journal is put on the disk (fsync) at most this often, with the line that
# comes this long or more after the last fsync, and when the store closes; each line is
# handed to the system as it is written.
JOURNAL_SYNC_SECONDS = 1.0

# The tables that file rows under a channel's or a watchlist's name: what Store.rename moves.
RENAMED_TABLES: dict[str, tuple[str, ...]] = {
    "channel": ("digests", "deliveries", "settled_papers"),
    "watchlist": ("digests", "ratings", "rating_events", "ranking_models", "previews",
                  "matches", "scoring_state"),
}


@dataclass(frozen=True)
class OpenDigest:
    """A digest recorded but not yet fully sent: resent with the same content."""

    id: int
    channel: str
    watchlist: str
    status: str
    payload: dict[str, Any]
    parts_sent: int
    attempts: int
    paper_keys: tuple[str, ...]


@dataclass(frozen=True)
class RatingOutcome:
    """What recording (or undoing) a rating did. ``event_id`` is None when nothing changed."""

    watchlist: str
    paper_key: str
    action: str | None  # the rating now in force for this reader, None when none is
    previous: str | None
    event_id: int | None
    # the click that set the rating in force, when this one changed nothing: what an undo
    # offered now would take back (None when no click set it, e.g. an undo did)
    standing_event: int | None = None

    @property
    def changed(self) -> bool:
        return self.event_id is not None


@dataclass(frozen=True)
class LeftOut:
    """A match a digest did not carry, with its rank in the whole ranking (the digest's
    own papers come first) and why it matched, in the digest's words."""

    paper_key: str
    rank: int
    score: float
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeftOutPage:
    """A recorded digest and the matches it left out; ``total`` counts those not kept too."""

    digest_id: int
    channel: str
    watchlist: str
    created_at: datetime
    total: int
    papers: tuple[LeftOut, ...]


@dataclass(frozen=True)
class Pruned:
    """What one pruning removed: papers, digests, and payloads made placeholders."""

    papers: int
    digests: int
    payloads: int


# What the payload of a digest nothing will send again becomes once it is old enough.
PRUNED_PAYLOAD = '{"pruned": true}'
# Digests nothing will send again: dropped, or sent with no recipient left to retry or to
# drop. Only these lose their payload or are pruned; open digests are kept whole.
_DONE_WITH = """(dropped_at IS NOT NULL OR (status = 'sent' AND NOT EXISTS (
    SELECT 1 FROM digest_recipients r WHERE r.digest_id = digests.id
      AND r.status IN ('failed_temporary', 'failed_permanent'))))"""


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def describe_store_error(path: Path | None, exc: BaseException) -> str:
    """What went wrong with the store file, in words that say what to do."""
    text = str(exc)
    where = str(path) if path else "the store"
    lowered = text.lower()
    if "full" in lowered or getattr(exc, "errno", None) == 28:
        return f"{where}: the disk is full ({text}); free some space and run again"
    if "readonly" in lowered or "read-only" in lowered or "attempt to write" in lowered:
        return (f"{where}: cannot write ({text}); check that the file, its folder and any "
                f"left-over {where}-wal / {where}-shm files are writable by this user")
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return (f"{where}: the store is damaged ({text}); restore the latest backup "
                "(see 'paper-digest backup' in the README)")
    return f"{where}: {text}"


@dataclass(frozen=True)
class KeptScores:
    """What a run scored for one watchlist, to keep: under which fingerprint, whether over
    the whole window, its matches, and the papers it was scored on."""

    fingerprint: str
    whole: bool
    matches: Sequence[Match]
    rescored: frozenset[str]


_TITLE_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*|[%_]+")
# Words that name several stored papers name none: at most this many are listed for the
# reader to choose from (Store.find is asked for one more, to know there are more).
FOUND_LISTED = 5


def found_several(papers: Sequence[Paper]) -> str:
    """How many stored papers words of a title name, as said when they name more than one
    (``papers`` as Store.find gave them, asked for FOUND_LISTED + 1)."""
    if len(papers) > FOUND_LISTED:
        return f"more than {FOUND_LISTED} stored papers match"
    return f"{len(papers)} stored papers match"


class Candidates:
    """The papers of a window each channel may still be sent: listed by a source, and not
    delivered, queued or settled for that channel. A run adds what it queues as it goes.

    The listed papers are numbered once; what a channel had is a sorted array of those
    numbers, 4 bytes a paper, rather than a set of keys: a week's deliveries to 1,000
    channels took 9.5 MiB as sets, as much as the rest of the scoring state.
    """

    def __init__(self, listed: Iterable[str], had: Iterable[tuple[str, str]] = ()) -> None:
        self._number = {key: number for number, key in enumerate(listed)}
        found: dict[str, array[int]] = {}
        for channel, key in had:
            number = self._number.get(key)
            if number is not None:  # a paper no source listed is never open anyway
                found.setdefault(channel, array("I")).append(number)
        self._had = {channel: array("I", sorted(set(numbers)))
                     for channel, numbers in found.items()}

    def for_channel(self, channel: str) -> set[str]:
        return {key for key, number in self._number.items() if not self._has(channel, number)}

    def open(self, channel: str, key: str) -> bool:
        number = self._number.get(key)
        return number is not None and not self._has(channel, number)

    def queued(self, channel: str, keys: Iterable[str]) -> None:
        had = self._had.setdefault(channel, array("I"))
        for key in keys:
            number = self._number.get(key)
            if number is not None:
                at = bisect_left(had, number)
                if at == len(had) or had[at] != number:
                    had.insert(at, number)

    def _has(self, channel: str, number: int) -> bool:
        had = self._had.get(channel)
        if not had:
            return False
        at = bisect_left(had, number)
        return at < len(had) and had[at] == number


class Store:
    def __init__(self, db: sqlite_utils.Database, path: Path | None = None) -> None:
        self.db = db
        self.path = path
        self._journal_synced = -JOURNAL_SYNC_SECONDS  # monotonic time of the last fsync
        self._journal_unsynced = False

    @classmethod
    def open(cls, path: str | Path) -> Store:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=30)
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            migrate(db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store: {describe_store_error(path, exc)}") from exc
        return cls(db, path)

    @property
    def journal_path(self) -> Path | None:
        """The delivery journal: an append-only copy of every delivery fact, kept apart
        from the database so that a restored backup learns what was sent after it."""
        return journal_path(self.path) if self.path else None

    def _journal(self, entry: dict[str, Any]) -> None:
        path = self.journal_path
        if path is None:
            return
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            with open(path, "a", encoding="utf-8") as journal:
                journal.write(line)
                journal.flush()  # in the system's hands: a crash of this process keeps it
                # On the disk with the first line JOURNAL_SYNC_SECONDS or more after the
                # last fsync, and when the store closes: an fsync per digest would cost a
                # slow disk seconds a run, and a power cut can take back as much of the
                # database's last commits.
                now = time.monotonic()
                if now - self._journal_synced >= JOURNAL_SYNC_SECONDS:
                    os.fsync(journal.fileno())
                    self._journal_synced, self._journal_unsynced = now, False
                else:
                    self._journal_unsynced = True
        except OSError as exc:
            raise StoreError(f"cannot append to the delivery journal: "
                             f"{describe_store_error(path, exc)}") from exc

    def sync_journal(self) -> None:
        """Put the journal's last lines on the disk, if any are not yet."""
        path = self.journal_path
        if path is None or not self._journal_unsynced:
            return
        try:
            with open(path, "a", encoding="utf-8") as journal:
                os.fsync(journal.fileno())
        except OSError as exc:
            raise StoreError(f"cannot write the delivery journal to disk: "
                             f"{describe_store_error(path, exc)}") from exc
        self._journal_synced, self._journal_unsynced = time.monotonic(), False

    def health(self) -> list[str]:
        """Problems that would make a run fail or lose facts, each with what to do."""
        problems = []
        try:
            result = [row[0] for row in self.db.execute("PRAGMA quick_check")]
        except sqlite3.Error as exc:
            result = [str(exc)]
        if result != ["ok"]:
            problems.append(f"{self.path}: SQLite's quick_check failed ({'; '.join(result[:3])}"
                            f"); restore the latest backup with 'paper-digest restore'")
        if self.path is not None:
            for candidate in (self.path, self.path.parent, journal_path(self.path),
                              self.path.with_name(self.path.name + "-wal"),
                              self.path.with_name(self.path.name + "-shm")):
                if candidate.exists() and not os.access(candidate, os.W_OK):
                    problems.append(f"{candidate} is not writable by this user; fix its owner "
                                    "or permissions (a left-over -wal or -shm file may be "
                                    "removed when no paper-digest process is running)")
            free = shutil.disk_usage(self.path.parent).free
            if free < LOW_DISK_BYTES:
                problems.append(f"{self.path.parent}: only {free // 1024} KB free on the disk; "
                                "free some space before the next run")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE source_state SET source = source WHERE 0")
            self.db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            problems.append(f"cannot write the store: {describe_store_error(self.path, exc)}")
        return problems

    def backup(self, destination: Path) -> Path:
        """A consistent copy of the store (SQLite's online backup), checked before use."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".partial")
        try:
            target = sqlite3.connect(str(partial))
            try:
                self.db.conn.backup(target)
                check = target.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                target.close()
            if check != "ok":
                raise StoreError(f"the backup failed its check ({check}); the store itself "
                                 "may be damaged")
            os.replace(partial, destination)
        except (sqlite3.Error, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise StoreError(f"cannot back up the store to {destination}: "
                             f"{describe_store_error(destination, exc)}") from exc
        return destination

    def close(self) -> None:
        try:
            self.sync_journal()
        finally:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """One transaction; any failure of SQLite or the disk becomes a StoreError."""
        try:
            with self.db.atomic():
                yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot {what}: {describe_store_error(self.path, exc)}") from exc

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold the store's run lock; another holder makes this raise LockedError."""
        if self.path is None:
            yield
            return
        with run_lock(self.path):
            yield

    # ------------------------------------------------------------------ papers

    def record_batch(
        self, source: str, papers: Iterable[Paper], state: SourceState, now: datetime
    ) -> tuple[int, int]:
        """Store what a source listed, and its state, in one transaction; return (new
        papers, already known papers)."""
        stamp = _iso(now)
        with self.writing(f"record papers from {source}"):
            new, known = self._record_sightings(source, papers, stamp, listing=True)
            self._record_success(source, state, stamp)
        return new, known

    def record_listing(self, source: str, papers: Iterable[Paper], now: datetime, *,
                       chunk: int = CHUNK) -> tuple[int, int]:
        """Store what a source listed, ``chunk`` papers per transaction, as they are read;
        return (new papers, already known papers), counted as record_batch counts them.

        The source's state is not written: call record_success once every paper is. A run
        that stops half-way keeps the chunks stored so far and reads the listing again;
        papers are keyed, so each is stored once however often it is recorded.
        """
        stamp = _iso(now)
        seen: set[str] = set()  # keys only: a paper listed twice is recorded once
        new = known = 0
        papers = iter(papers)
        while part := list(itertools.islice(papers, chunk)):
            with self.writing(f"record papers from {source}"):
                counts = self._record_sightings(source, part, stamp, listing=True, seen=seen)
            new, known = new + counts[0], known + counts[1]
            log.debug("source=%s recorded=%d new=%d", source, new + known, new)
        return new, known

    def record_success(self, source: str, state: SourceState, now: datetime) -> None:
        """Remember a source's state (ETag, Last-Modified) and that it was read and stored
        whole: after the last chunk of record_listing."""
        with self.writing(f"record papers from {source}"):
            self._record_success(source, state, _iso(now))

    def _record_success(self, source: str, state: SourceState, stamp: str) -> None:
        self.db.execute(
            """INSERT INTO source_state (source, etag, last_modified, last_success,
                                         consecutive_failures)
               VALUES (?, ?, ?, ?, 0)
               ON CONFLICT (source) DO UPDATE SET etag = excluded.etag,
                   last_modified = excluded.last_modified,
                   last_success = excluded.last_success, consecutive_failures = 0""",
            [source, state.etag, state.last_modified, stamp],
        )

    def record_references(self, papers: Iterable[Paper], now: datetime) -> int:
        """Store papers looked up for a reason other than news (seeds, imported likes).

        They are not listings: their ``first_seen`` is their publication date when older,
        so they stay out of the lookback window and are never sent as new. No sighting or
        source state is written. Returns how many were new to the store.
        """
        stamp = _iso(now)
        new = 0
        papers = iter(papers)
        with self.writing("record looked-up papers"):
            while part := list(itertools.islice(papers, CHUNK)):
                first_seen = [stamp if paper.published is None else
                              min(stamp, _iso(paper.published.astimezone(now.tzinfo)))
                              for paper in part]
                new += sum(self._merge_papers(part, stamp, first_seen=first_seen))
        return new

    def _merge_papers(self, papers: Sequence[Paper], stamp: str, *,
                      first_seen: Sequence[str] | None = None) -> list[bool]:
        """Merge each paper into the store, in order, as if one at a time; for each,
        whether it was new. One read of the stored rows, one write per kind.

        ``first_seen`` gives each paper's first sighting if new (else ``stamp``).
        """
        keys = list(dict.fromkeys(paper.key for paper in papers))
        marks = ",".join("?" * len(keys))
        cursor = self.db.execute(f"SELECT * FROM papers WHERE key IN ({marks})", keys)
        columns = [d[0] for d in cursor.description]
        rows: dict[str, dict[str, Any]] = {row[0]: dict(zip(columns, row, strict=True))
                                           for row in cursor}
        pruned = dict(self.db.execute(
            f"SELECT key, first_seen FROM pruned_papers WHERE key IN ({marks})", keys
        ).fetchall()) if len(rows) < len(keys) else {}
        inserted: dict[str, None] = {}  # new rows, in the order they came
        updated: dict[str, None] = {}  # stored rows that changed
        new = []
        for number, paper in enumerate(papers):
            values = _paper_row(paper)
            old = rows.get(paper.key)
            if old is None:
                # A paper pruned for age keeps its first sighting: listed again (a new
                # version), it is neither new nor a candidate, as before it was pruned.
                seen = first_seen[number] if first_seen else stamp
                was_pruned = paper.key in pruned
                rows[paper.key] = {**values, "updated_at": stamp,
                                   "first_seen": min(pruned[paper.key], seen) if was_pruned
                                   else seen}
                inserted[paper.key] = None
                new.append(not was_pruned)
                continue
            merged = _merged(old, values, paper)
            if merged != old:
                merged["updated_at"] = stamp
                rows[paper.key] = merged
                if paper.key not in inserted:
                    updated[paper.key] = None
            new.append(False)
        if inserted:
            names = [*_paper_row(papers[0]), "updated_at", "first_seen"]
            self.db.conn.executemany(
                f"INSERT INTO papers ({', '.join(names)}) VALUES ({','.join('?' * len(names))})",
                [[rows[key][name] for name in names] for key in inserted])
        if updated:
            names = [name for name in columns if name != "key"]
            self.db.conn.executemany(
                f"UPDATE papers SET {', '.join(f'{name} = ?' for name in names)} WHERE key = ?",
                [[*(rows[key][name] for name in names), key] for key in updated])
        return new

    def record_source_error(self, source: str, error: str, now: datetime) -> None:
        stamp = _iso(now)
        with self.writing(f"record the failure of {source}"):
            self.db.execute(
                """INSERT INTO source_state (source, last_error, last_error_at,
                                             consecutive_failures)
                   VALUES (?, ?, ?, 1)
                   ON CONFLICT (source) DO UPDATE SET last_error = excluded.last_error,
                       last_error_at = excluded.last_error_at,
                       consecutive_failures = consecutive_failures + 1""",
                [source, error, stamp],
            )

    def last_success(self, source: str) -> datetime | None:
        """When the source was last read and stored without a failure; None if never."""
        row = self.db.execute("SELECT last_success FROM source_state WHERE source = ?",
                              [source]).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    # ------------------------------------------------------------------ catch-up

    def record_backfill(self, source: str, papers: Iterable[Paper],
                        now: datetime) -> tuple[int, int]:
        """Store papers a catch-up found for a source; return (new papers, already known).

        Unlike record_batch, the source's own state (ETag, last success) is left alone:
        its feed was not read.
        """
        stamp = _iso(now)
        with self.writing(f"record the papers caught up for {source}"):
            return self._record_sightings(source, papers, stamp, listing=False)

    def _record_sightings(self, source: str, papers: Iterable[Paper], stamp: str, *,
                          listing: bool, seen: set[str] | None = None) -> tuple[int, int]:
        """Merge each paper once and note that ``source`` saw it; (new, already known).

        A ``listing`` (the source's own feed) also updates what the source says of the
        paper now (its announce type and version); a backfill only notes the sighting.
        ``seen`` holds the keys recorded already (by earlier chunks of the same listing).
        """
        new = known = 0
        seen = set() if seen is None else seen
        update = ("announce_type = excluded.announce_type, version = "
                  "max(coalesce(version, 0), coalesce(excluded.version, 0)), " if listing else "")
        papers = iter(papers)
        while part := list(itertools.islice(papers, CHUNK)):
            once = []
            for paper in part:
                if paper.key not in seen:
                    seen.add(paper.key)
                    once.append(paper)
            if not once:
                continue
            fresh = sum(self._merge_papers(once, stamp))
            new, known = new + fresh, known + len(once) - fresh
            self.db.conn.executemany(
                f"""INSERT INTO sightings (paper_key, source, announce_type, version,
                                           first_seen, last_seen)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (paper_key, source) DO UPDATE SET
                        {update}last_seen = excluded.last_seen""",
                [(p.key, source, p.announce_type, p.version, stamp, stamp) for p in once])
        return new, known

    def catch_up_days(self, source: str) -> dict[str, str]:
        """The announcement days (YYYY-MM-DD) a source's catch-up knows of: pending or done."""
        return {day: status for day, status in self.db.execute(
            "SELECT announced_on, status FROM catch_up WHERE source = ?", [source])}

    def plan_catch_up(self, source: str, days: Iterable[str], now: datetime) -> None:
        """Remember missed announcement days before fetching them, so that a run that stops
        half-way leaves them pending for the next one."""
        with self.writing(f"record the days {source} missed"):
            for day in days:
                self.db.execute(
                    "INSERT OR IGNORE INTO catch_up (source, announced_on, status, updated_at) "
                    "VALUES (?, ?, 'pending', ?)", [source, day, _iso(now)])

    def record_backfill_page(self, source: str, papers: Iterable[Paper], *, day: str,
                             now: datetime) -> int:
        """Store one page of a catch-up and count it against the announcement day ``day``
        (the last day the query covers: one query fetches several). Returns the new papers.
        """
        papers = list(papers)
        new, _ = self.record_backfill(source, papers, now)
        with self.writing(f"count the papers caught up for {source}"):
            self.db.execute(
                "UPDATE catch_up SET papers = papers + ?, new = new + ?, updated_at = ? "
                "WHERE source = ? AND announced_on = ?",
                [len(papers), new, _iso(now), source, day])
        return new

    def finish_catch_up(self, source: str, days: Iterable[str], now: datetime, *,
                        status: str = "done") -> None:
        """Every page of these days is stored: they are done. Or, with status "expired",
        they fell out of catch_up_days while pending: they are given up."""
        with self.writing(f"record the catch-up of {source}"):
            for day in days:
                self.db.execute(
                    "UPDATE catch_up SET status = ?, updated_at = ? "
                    "WHERE source = ? AND announced_on = ?", [status, _iso(now), source, day])

    def catch_up_summary(self, source: str) -> dict[str, Any]:
        """For status: days done and pending, papers found and new, when last done."""
        row = self.db.execute(
            """SELECT sum(status = 'done'), sum(status = 'pending'),
                      max(CASE WHEN status = 'done' THEN updated_at END), sum(papers), sum(new)
               FROM catch_up WHERE source = ?""", [source]).fetchone()
        return {"done": row[0] or 0, "pending": row[1] or 0, "last": row[2],
                "papers": row[3] or 0, "new": row[4] or 0}

    def latest_digest_at(self, channel: str, watchlist: str) -> datetime | None:
        """When this channel's latest digest (a heartbeat included) of this watchlist was
        recorded; dropped ones do not count."""
        row = self.db.execute(
            "SELECT max(created_at) FROM digests WHERE channel = ? AND watchlist = ? "
            "AND dropped_at IS NULL", [channel, watchlist]).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def source_state(self, source: str) -> SourceState:
        row = self.db.execute(
            "SELECT etag, last_modified FROM source_state WHERE source = ?", [source]
        ).fetchone()
        return SourceState(etag=row[0], last_modified=row[1]) if row else SourceState()

    def paper(self, key: str) -> Paper | None:
        rows = list(self.db.query("SELECT * FROM papers WHERE key = ?", [key]))
        return _paper_from_row(rows[0]) if rows else None

    def papers_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM papers").fetchone()[0])

    def texts(self) -> Iterator[str]:
        """Title and abstract of every stored paper, for corpus statistics."""
        for title, abstract in self.db.execute("SELECT title, abstract FROM papers"):
            yield f"{title}. {abstract}"

    def find(self, wanted: str, *, limit: int = 5) -> list[Paper]:
        """Papers by key, arXiv id (any version), DOI, or words of the title."""
        wanted = wanted.strip()
        keys = [wanted]
        if parsed := parse_arxiv_id(wanted):
            keys.append(f"arxiv:{parsed[0]}")
        if doi := normalise_doi(wanted):
            keys.append(f"doi:{doi}")
        for key in keys:
            if found := self.paper(key):
                return [found]
        # Words of the title, whole and in any order: "LoRA" is not in "expLORAtion", and
        # "%" or "_" is a character to find, not a wildcard.
        words = _TITLE_WORD.findall(wanted.lower())
        if not words:
            return []
        where = " AND ".join("title LIKE ? ESCAPE '\\'" for _ in words)
        like = ["%" + re.sub(r"([\\%_])", r"\\\1", word) + "%" for word in words]
        whole = [re.compile(("(?<!\\w)" if word[0].isalnum() else "") + re.escape(word)
                            + ("(?!\\w)" if word[-1].isalnum() else ""), re.IGNORECASE)
                 for word in words]
        titled: list[Paper] = []
        for row in self.db.query(f"SELECT * FROM papers WHERE {where} "
                                 "ORDER BY first_seen DESC", like):
            if all(w.search(row["title"]) for w in whole):
                titled.append(_paper_from_row(row))
                if len(titled) == limit:
                    break
        return titled

    def sources_of(self, key: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT source FROM sightings WHERE paper_key = ? ORDER BY source", [key])]

    def recent(self, since: datetime) -> list[Paper]:
        """Papers first seen since ``since``, oldest first."""
        rows = self.db.query("SELECT * FROM papers WHERE first_seen >= ? "
                             "ORDER BY first_seen, key", [_iso(since)])
        return [_paper_from_row(row) for row in rows]

    # ------------------------------------------------------------------ kept scores

    def scoring_state(self) -> dict[str, tuple[str, int]]:
        """Each watchlist scored before: (fingerprint of its definition, the paper change
        number it was scored through)."""
        return {name: (fingerprint, through) for name, fingerprint, through in self.db.execute(
            "SELECT watchlist, fingerprint, through FROM scoring_state")}

    def last_change(self) -> int:
        """The number of the latest paper added or changed; 0 for an empty store."""
        row = self.db.execute("SELECT MAX(seq) FROM paper_changes").fetchone()
        return int(row[0] or 0)

    def window_count(self, since: datetime) -> int:
        """How many papers were first seen since ``since``."""
        return int(self.db.execute("SELECT COUNT(*) FROM papers WHERE first_seen >= ?",
                                   [_iso(since)]).fetchone()[0])

    def count_changed(self, since: datetime, after: int = 0) -> int:
        """How many papers ``changed_since`` gives."""
        return int(self.db.execute(
            "SELECT COUNT(*) FROM paper_changes c JOIN papers p ON p.key = c.paper_key "
            "WHERE c.seq > ? AND p.first_seen >= ?", [after, _iso(since)]).fetchone()[0])

    def changed_since(self, since: datetime, after: int = 0, *,
                      chunk: int = 2000) -> Iterator[list[Paper]]:
        """Papers first seen since ``since`` and added or changed after change ``after``
        (every paper of the window with 0), oldest first as ``recent`` orders them, in
        lists of at most ``chunk``: a window of any size is read a chunk at a time."""
        cursor = self.db.execute(
            "SELECT p.* FROM paper_changes c JOIN papers p ON p.key = c.paper_key "
            "WHERE c.seq > ? AND p.first_seen >= ? ORDER BY p.first_seen, p.key",
            [after, _iso(since)])
        names = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(chunk):
            yield [_paper_from_row(dict(zip(names, row, strict=True))) for row in rows]

    def kept_matches(self, since: datetime,
                     names: Iterable[str]) -> Iterator[tuple[str, str, float, str]]:
        """(watchlist, paper key, score, reasons as JSON) of the kept matches of papers first
        seen since ``since``; the reasons are left for the caller to read when it needs."""
        wanted = list(names)
        if not wanted:
            return
        marks = ",".join("?" * len(wanted))
        yield from self.db.execute(
            f"SELECT watchlist, paper_key, score, reasons FROM matches "
            f"WHERE first_seen >= ? AND watchlist IN ({marks})", [_iso(since), *wanted])

    def keep_scores(self, scored: Mapping[str, KeptScores], *, through: int,
                    since: datetime, now: datetime) -> None:
        """Keep what one run scored, each watchlist now scored through change ``through``.

        A watchlist scored over the whole window loses its earlier matches; the others lose
        theirs of the papers scored again only. Matches of papers that left the window go.
        """
        stamp = _iso(now)
        groups: dict[frozenset[str], list[str]] = {}  # watchlists scored on the same papers
        for name, kept in scored.items():
            groups.setdefault(kept.rescored, []).append(name)
        with self.writing("keep the run's scores"):
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS rescored_keys "
                            "(key TEXT PRIMARY KEY) WITHOUT ROWID")
            for rescored, names in groups.items():
                self.db.execute("DELETE FROM temp.rescored_keys")
                self.db.conn.executemany("INSERT OR IGNORE INTO temp.rescored_keys VALUES (?)",
                                         [(key,) for key in rescored])
                # Only a paper some watchlist kept a match for can hold one to replace. Most
                # days the papers scored again are new, and a DELETE per watchlist probing
                # each of them grew with the matches the week kept.
                self.db.execute("DELETE FROM temp.rescored_keys "
                                "WHERE key NOT IN (SELECT paper_key FROM matches)")
                stale = self.db.execute(
                    "SELECT EXISTS (SELECT 1 FROM temp.rescored_keys)").fetchone()[0]
                for name in names:
                    kept = scored[name]
                    if kept.whole:
                        self.db.execute("DELETE FROM matches WHERE watchlist = ?", [name])
                    elif stale:
                        self.db.execute("DELETE FROM matches WHERE watchlist = ? AND paper_key "
                                        "IN (SELECT key FROM temp.rescored_keys)", [name])
                    self.db.conn.executemany(
                        "INSERT OR REPLACE INTO matches (watchlist, paper_key, first_seen, "
                        "score, reasons) SELECT ?, key, first_seen, ?, ? FROM papers "
                        "WHERE key = ?",
                        [(name, m.score, reasons_json(m.reasons), m.paper.key)
                         for m in kept.matches])
                    self.db.execute(
                        "INSERT INTO scoring_state (watchlist, fingerprint, through, scored_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (watchlist) DO UPDATE SET "
                        "fingerprint = excluded.fingerprint, through = excluded.through, "
                        "scored_at = excluded.scored_at", [name, kept.fingerprint, through, stamp])
            self.db.execute("DELETE FROM matches WHERE first_seen < ?", [_iso(since)])

    def term_counts(self, terms_of: Callable[[str], Iterable[str]],
                    progress: Callable[[str], None] = lambda line: None,
                    ) -> tuple[dict[str, int], int]:
        """How many stored papers hold each term (``terms_of`` a paper's "title. abstract"),
        and how many papers there are: counted once over the store, then brought up to
        date from the papers added or changed since and the texts changed or deleted."""
        with self.writing("count the stored papers' words"):
            papers = self._count_terms(terms_of, progress)
            found = {term: count for term, count in self.db.execute(
                "SELECT term, papers FROM term_counts")}
        return found, papers

    def term_weights(self, terms_of: Callable[[str], Iterable[str]],
                     progress: Callable[[str], None] = lambda line: None,
                     ) -> tuple[dict[str, int], int, int]:
        """The term counts (see ``term_counts``) as taken at one moment, the papers stored
        then, and which taking it is (1, 2, ...). They are taken anew once the papers that
        came, went or changed since outnumber TERM_WEIGHTS_DRIFT of those then, so that
        what was scored under them holds for many runs."""
        with self.writing("count the stored papers' words"):
            papers = self._count_terms(terms_of, progress)
            state = self.db.execute(
                "SELECT papers, moved, taking FROM term_weights_state").fetchone()
            if state is None or state[1] > TERM_WEIGHTS_DRIFT * state[0]:
                taking = (state[2] if state else 0) + 1
                self.db.execute("DELETE FROM term_weights")
                self.db.execute("INSERT INTO term_weights (term, papers) "
                                "SELECT term, papers FROM term_counts")
                self.db.execute("INSERT OR REPLACE INTO term_weights_state "
                                "(id, papers, taken, moved, taking) VALUES (1, ?, ?, 0, ?)",
                                [papers, self.last_change(), taking])
                state = (papers, 0, taking)
            found = {term: count for term, count in self.db.execute(
                "SELECT term, papers FROM term_weights")}
        return found, int(state[0]), int(state[2])

    def _count_terms(self, terms_of: Callable[[str], Iterable[str]],
                     progress: Callable[[str], None]) -> int:
        """Bring the term counts up to date (see ``term_counts``), and add the papers that
        came, went or changed to those since the counts were taken (``term_weights``);
        the papers stored."""
        state = self.db.execute("SELECT through, papers FROM term_counts_state").fetchone()
        through = self.last_change()
        counts: Counter[str] = Counter()
        moved = 0
        if state is None:
            progress(f"counting the words of {self.papers_count()} stored papers for "
                     "similar_to (once; later runs count only what changed)")
            for text in self.texts():
                counts.update(set(terms_of(text)))
                moved += 1  # counted anew: so are the counts taken
            self.db.execute("DELETE FROM term_counts")
            self.db.execute("DELETE FROM term_counts_retired")
            self._add_term_counts(counts)
        else:
            for title, abstract in self.db.execute(
                    "SELECT p.title, p.abstract FROM paper_changes c JOIN papers p "
                    "ON p.key = c.paper_key WHERE c.seq > ?", [state[0]]):
                counts.update(set(terms_of(f"{title}. {abstract}")))
                moved += 1
            for title, abstract in self.db.execute(
                    "SELECT title, abstract FROM term_counts_retired"):
                counts.subtract(set(terms_of(f"{title}. {abstract}")))
                moved += 1
            self.db.execute("DELETE FROM term_counts_retired")
            self._add_term_counts(counts)
        self.db.execute("UPDATE term_weights_state SET moved = moved + ?", [moved])
        papers = self.papers_count()
        self.db.execute("INSERT OR REPLACE INTO term_counts_state (id, through, papers) "
                        "VALUES (1, ?, ?)", [through, papers])
        return papers

    def _add_term_counts(self, counts: Mapping[str, int]) -> None:
        self.db.conn.executemany(
            "INSERT INTO term_counts (term, papers) VALUES (?, ?) ON CONFLICT (term) "
            "DO UPDATE SET papers = papers + excluded.papers",
            [(term, count) for term, count in counts.items() if count])
        self.db.execute("DELETE FROM term_counts WHERE papers <= 0")

    def word_forms(self, made_by: str) -> dict[str, frozenset[str]]:
        """The forms of each word kept by earlier runs, as ``made_by`` made them."""
        return {word: frozenset(json.loads(forms)) for word, forms in self.db.execute(
            "SELECT word, forms FROM word_forms WHERE made_by = ?", [made_by])}

    def keep_word_forms(self, forms: Mapping[str, Iterable[str]], made_by: str) -> None:
        with self.writing("keep the forms of the watchlists' words"):
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO word_forms (word, made_by, forms) VALUES (?, ?, ?)",
                [(word, made_by, json.dumps(sorted(found))) for word, found in forms.items()])

    def recent_upvotes(self, since: datetime) -> dict[str, int | None]:
        """The upvotes of each paper first seen since ``since``, by key."""
        return dict(self.db.execute(
            "SELECT key, upvotes FROM papers WHERE first_seen >= ?", [_iso(since)]))

    def recent_keys(self, since: datetime) -> set[str]:
        """Keys of the papers first seen since ``since``, without reading the papers."""
        return {row[0] for row in self.db.execute(
            "SELECT key FROM papers WHERE first_seen >= ?", [_iso(since)])}

    def lacking_arxiv_facts(self, since: datetime, arxiv_sources: Iterable[str]) -> list[str]:
        """arXiv ids of papers a source listed since ``since`` that no arXiv listing
        described (no categories, or only other sources listed them, whose author lists
        may be cut short), and that arXiv was never asked about. Oldest first. Papers
        looked up on arXiv itself (seeds, imported likes) are complete already."""
        names = list(arxiv_sources)
        marks = ",".join("?" * len(names))
        listed = (f"AND NOT EXISTS (SELECT 1 FROM sightings s WHERE s.paper_key = p.key "
                  f"AND s.source IN ({marks}))") if names else ""
        rows = self.db.execute(
            f"""SELECT p.arxiv_id FROM papers p
                WHERE p.first_seen >= ? AND p.arxiv_id IS NOT NULL
                  AND p.key = 'arxiv:' || p.arxiv_id
                  AND NOT EXISTS (SELECT 1 FROM arxiv_lookups l WHERE l.key = p.key)
                  AND EXISTS (SELECT 1 FROM sightings s WHERE s.paper_key = p.key)
                  AND (p.categories = '[]' OR 1 {listed})
                ORDER BY p.first_seen, p.key""", [_iso(since), *names])
        return [row[0] for row in rows]

    def record_arxiv_facts(self, found: Iterable[Paper], *, asked: Iterable[str],
                           now: datetime) -> int:
        """Give the asked papers arXiv's categories (its own first, then any others known),
        primary category and author list (when no shorter than the stored one), and note
        every asked id, found or not, so it is not asked again. Returns papers changed."""
        stamp = _iso(now)
        keys = [f"arxiv:{arxiv_id}" for arxiv_id in asked]
        by_key = {paper.key: paper for paper in found if paper.key in set(keys)}
        changed = 0
        with self.writing("record what arXiv says of listed papers"):
            for key, paper in by_key.items():
                row = self.db.execute("SELECT categories, authors, abstract FROM papers "
                                      "WHERE key = ?", [key]).fetchone()
                if row is None:
                    continue
                known = json.loads(row[0])
                categories = list(paper.categories) + [c for c in known
                                                       if c not in paper.categories]
                authors = json.loads(row[1])
                if len(paper.authors) >= len(authors):
                    authors = list(paper.authors)
                values = {"categories": json.dumps(categories),
                          "authors": json.dumps(authors, ensure_ascii=False),
                          "abstract": row[2] or paper.abstract}
                if paper.primary_category:
                    values["primary_category"] = paper.primary_category
                self.db.execute(
                    "UPDATE papers SET " + ", ".join(f"{c} = ?" for c in values)
                    + ", updated_at = ? WHERE key = ?", [*values.values(), stamp, key])
                changed += 1
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO arxiv_lookups (key, found, asked_at) VALUES (?, ?, ?)",
                [(key, int(key in by_key), stamp) for key in keys])
        return changed

    def last_preview(self, watchlist: str) -> tuple[str, list[str], int, datetime] | None:
        """The latest preview of a watchlist: its definition, the papers it matched, over
        how many days, and when."""
        row = self.db.execute("SELECT definition, paper_keys, days, created_at FROM previews "
                              "WHERE watchlist = ?", [watchlist]).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1]), int(row[2]), datetime.fromisoformat(row[3])

    def record_preview(self, watchlist: str, *, definition: str, paper_keys: Iterable[str],
                       days: int, now: datetime) -> None:
        with self.writing(f"record the preview of {watchlist}"):
            self.db.execute(
                """INSERT INTO previews (watchlist, definition, paper_keys, days, created_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (watchlist) DO UPDATE SET definition = excluded.definition,
                       paper_keys = excluded.paper_keys, days = excluded.days,
                       created_at = excluded.created_at""",
                [watchlist, definition, json.dumps(list(paper_keys)), days, _iso(now)])

    def candidate_keys(self, channel: str, since: datetime) -> set[str]:
        """Keys of the papers first seen since ``since`` this channel has not had or queued.

        Only papers a source listed qualify: one looked up for a seed or an imported like
        is a reference, not news, however recent its date.
        """
        rows = self.db.execute(
            """SELECT p.key FROM papers p
               WHERE p.first_seen >= ?
                 AND EXISTS (SELECT 1 FROM sightings s WHERE s.paper_key = p.key)
                 AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.channel = ? AND d.paper_key = p.key)
                 AND NOT EXISTS (SELECT 1 FROM digest_papers dp JOIN digests g
                                   ON g.id = dp.digest_id
                                 WHERE g.channel = ? AND dp.paper_key = p.key
                                   AND g.status != 'sent' AND g.dropped_at IS NULL)
                 AND NOT EXISTS (SELECT 1 FROM settled_papers s
                                 WHERE s.channel = ? AND s.paper_key = p.key)""",
            [_iso(since), channel, channel, channel],
        )
        return {row[0] for row in rows}

    def candidates(self, since: datetime) -> Candidates:
        """What ``candidate_keys`` says, for every channel at once, in three set queries.

        A run asks this once: its cost follows the window's papers and what was delivered
        or queued from them, not the number of channels.
        """
        stamp = _iso(since)
        listed = (row[0] for row in self.db.execute(
            """SELECT p.key FROM papers p WHERE p.first_seen >= ?
                 AND EXISTS (SELECT 1 FROM sightings s WHERE s.paper_key = p.key)""",
            [stamp]))
        # From the window's papers to what was done with them (CROSS JOIN keeps that
        # order): the cost follows the window, not every delivery the store ever made.
        had = self.db.execute(
            """SELECT d.channel, d.paper_key FROM papers p CROSS JOIN deliveries d
                WHERE p.first_seen >= ? AND d.paper_key = p.key
               UNION ALL
               SELECT g.channel, dp.paper_key
                 FROM papers p CROSS JOIN digest_papers dp CROSS JOIN digests g
                WHERE p.first_seen >= ? AND dp.paper_key = p.key AND g.id = dp.digest_id
                  AND g.status != 'sent' AND g.dropped_at IS NULL
               UNION ALL
               SELECT s.channel, s.paper_key FROM papers p CROSS JOIN settled_papers s
                WHERE p.first_seen >= ? AND s.paper_key = p.key""",
            [stamp, stamp, stamp])
        return Candidates(listed, had)

    # ------------------------------------------------------------------ digests

    def create_digest(self, digest: Digest, payload: dict[str, Any], now: datetime, *,
                      digest_id: int | None = None, left_out: Iterable[LeftOut] = (),
                      packed: bytes | None = None) -> int:
        """Record a composed digest as pending, before anything is sent.

        ``digest_id`` is the id from ``next_digest_id`` that the payload's links already
        name (taken since then: a StoreError); ``left_out`` the matches it did not carry;
        ``packed`` the payload as ``pack_payload`` gives it, where that was done already.
        """
        stamp = _iso(now)
        left_out = list(left_out)
        with self.writing(f"record the digest for {digest.channel}"):
            cursor = self.db.execute(
                """INSERT INTO digests (id, channel, watchlist, status, payload, created_at,
                                        updated_at, left_out)
                   VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)""",
                [digest_id, digest.channel, digest.watchlist,
                 pack_payload(payload) if packed is None else packed, stamp,
                 stamp, digest.left_out if left_out else None],
            )
            digest_id = int(cursor.lastrowid or 0)
            self.db.conn.executemany(
                "INSERT INTO digest_papers (digest_id, paper_key, rank, score) "
                "VALUES (?, ?, ?, ?)",
                [(digest_id, match.paper.key, rank, match.score)
                 for rank, match in enumerate(digest.matches, start=1)])
            self.db.conn.executemany(
                "INSERT INTO digest_overflow (digest_id, rank, paper_key, score, reasons) "
                "VALUES (?, ?, ?, ?, ?)",
                [(digest_id, paper.rank, paper.paper_key, paper.score,
                  json.dumps(list(paper.reasons), ensure_ascii=False)) for paper in left_out])
        return digest_id

    def next_digest_id(self) -> int:
        """The id the next digest recorded gets, for links that must name it before it is
        recorded. Only a run records digests, and it holds the run lock meanwhile."""
        row = self.db.execute("SELECT coalesce(max(id), 0) + 1 FROM digests").fetchone()
        return int(row[0])

    def digest_left_out(self, digest_id: int) -> LeftOutPage | None:
        """What a digest left out, ranked, for the web app's page; None for no such digest."""
        row = self.db.execute("SELECT channel, watchlist, created_at, left_out FROM digests "
                              "WHERE id = ?", [digest_id]).fetchone()
        if row is None:
            return None
        papers = tuple(
            LeftOut(paper_key=key, rank=rank, score=score, reasons=tuple(json.loads(reasons)))
            for rank, key, score, reasons in self.db.execute(
                "SELECT rank, paper_key, score, reasons FROM digest_overflow "
                "WHERE digest_id = ? ORDER BY rank", [digest_id]))
        return LeftOutPage(digest_id=digest_id, channel=row[0], watchlist=row[1],
                           created_at=datetime.fromisoformat(row[2]), total=row[3] or 0,
                           papers=papers)

    def open_digests(self, channels: Iterable[str] | None = None) -> list[OpenDigest]:
        rows = self.db.execute(
            "SELECT id, channel FROM digests WHERE status IN ('pending', 'failed_temporary') "
            "AND dropped_at IS NULL ORDER BY id").fetchall()
        wanted = set(channels) if channels is not None else None
        out = []
        for digest_id, channel in rows:
            if wanted is not None and channel not in wanted:
                continue
            digest = self._open_digest(digest_id)
            if digest is not None:
                out.append(digest)
        return out

    def mark_part_sent(self, digest_id: int, parts_sent: int, now: datetime) -> None:
        """A channel accepted part ``parts_sent`` of a multi-part digest."""
        with self.writing(f"record part {parts_sent} of digest {digest_id} as sent"):
            self.db.execute("UPDATE digests SET parts_sent = ?, updated_at = ? WHERE id = ?",
                            [parts_sent, _iso(now), digest_id])

    def mark_sent(self, digest_id: int, now: datetime,
                  refused: Mapping[str, tuple[bool, str]] | None = None) -> None:
        """The channel accepted the digest. ``refused`` names the recipients it did not
        accept (address -> (permanent, reason)): each is kept to be retried or shown."""
        stamp = _iso(now)
        with self.writing(f"record digest {digest_id} as sent"):
            row = self.db.execute("SELECT channel FROM digests WHERE id = ?",
                                  [digest_id]).fetchone()
            self.db.execute(
                "UPDATE digests SET status = 'sent', attempts = attempts + 1, last_error = NULL,"
                " updated_at = ? WHERE id = ?", [stamp, digest_id])
            self.db.execute(
                """INSERT OR IGNORE INTO deliveries (channel, paper_key, digest_id, delivered_at)
                   SELECT ?, paper_key, digest_id, ? FROM digest_papers WHERE digest_id = ?""",
                [row[0], stamp, digest_id])
            for recipient, (permanent, reason) in (refused or {}).items():
                self._record_recipient(digest_id, recipient, permanent, reason, stamp)
            keys = [r[0] for r in self.db.execute(
                "SELECT paper_key FROM digest_papers WHERE digest_id = ?", [digest_id])]
        self._journal({"fact": "delivered", "channel": row[0], "digest": digest_id,
                       "papers": keys, "at": stamp})

    def _record_recipient(self, digest_id: int, recipient: str, permanent: bool, reason: str,
                          stamp: str) -> None:
        self.db.execute(
            """INSERT INTO digest_recipients (digest_id, recipient, status, error, attempts,
                                              updated_at)
               VALUES (?, ?, ?, ?, 1, ?)
               ON CONFLICT (digest_id, recipient) DO UPDATE SET status = excluded.status,
                   error = excluded.error, attempts = attempts + 1,
                   updated_at = excluded.updated_at""",
            [digest_id, recipient, "failed_permanent" if permanent else "failed_temporary",
             reason, stamp])

    def recipient_retries(self, channels: Iterable[str]) -> list[tuple[OpenDigest, list[str]]]:
        """Sent digests that some recipients refused for now: the digest and those recipients."""
        wanted = set(channels)
        out = []
        rows = self.db.execute(
            """SELECT r.digest_id, group_concat(r.recipient, char(10)) FROM digest_recipients r
               JOIN digests g ON g.id = r.digest_id
               WHERE r.status = 'failed_temporary' AND g.dropped_at IS NULL
               GROUP BY r.digest_id ORDER BY r.digest_id""").fetchall()
        for digest_id, recipients in rows:
            digest = self._open_digest(digest_id)
            if digest is not None and digest.channel in wanted:
                out.append((digest, sorted(recipients.split("\n"))))
        return out

    def mark_recipients(self, digest_id: int, outcome: Mapping[str, tuple[str, str | None]],
                        now: datetime) -> None:
        """Record a retry to some recipients: address -> (status, error)."""
        with self.writing(f"record the recipients of digest {digest_id}"):
            for recipient, (status, error) in outcome.items():
                self.db.execute(
                    "UPDATE digest_recipients SET status = ?, error = ?, "
                    "attempts = attempts + 1, updated_at = ? "
                    "WHERE digest_id = ? AND recipient = ?",
                    [status, error, _iso(now), digest_id, recipient])

    def refused_recipients(self) -> list[dict[str, Any]]:
        """Recipients that have not received a digest their channel accepted."""
        return list(self.db.query(
            """SELECT g.channel, r.digest_id, r.recipient, r.status, r.error, r.attempts,
                      r.updated_at
               FROM digest_recipients r JOIN digests g ON g.id = r.digest_id
               WHERE r.status IN ('failed_temporary', 'failed_permanent')
                 AND g.dropped_at IS NULL
               ORDER BY g.channel, r.digest_id, r.recipient"""))

    def mark_failed(self, digest_id: int, error: str, *, permanent: bool, now: datetime,
                    fingerprint: str | None = None) -> None:
        """The channel refused the digest. ``fingerprint`` names the channel settings it was
        refused with: a digest that failed for good is tried again once they change."""
        status = "failed_permanent" if permanent else "failed_temporary"
        with self.writing(f"record the failure of digest {digest_id}"):
            self.db.execute(
                "UPDATE digests SET status = ?, attempts = attempts + 1, last_error = ?,"
                " updated_at = ?, channel_fingerprint = coalesce(?, channel_fingerprint) "
                "WHERE id = ?", [status, error, _iso(now), fingerprint, digest_id])

    def requeue_changed(self, fingerprints: Mapping[str, str], now: datetime) -> list[int]:
        """Make pending again the digests that failed for good under settings since changed.

        ``fingerprints`` maps each channel to its current settings' fingerprint.
        """
        requeued = []
        with self.writing("requeue digests of corrected channels"):
            rows = self.db.execute(
                "SELECT id, channel, channel_fingerprint FROM digests "
                "WHERE status = 'failed_permanent' AND dropped_at IS NULL").fetchall()
            for digest_id, channel, fingerprint in rows:
                current = fingerprints.get(channel)
                if current is not None and fingerprint is not None and fingerprint != current:
                    self.db.execute("UPDATE digests SET status = 'pending', updated_at = ? "
                                    "WHERE id = ?", [_iso(now), digest_id])
                    requeued.append(digest_id)
        return requeued

    def drop(self, digest_ids: Iterable[int], *, skip: bool, now: datetime) -> list[OpenDigest]:
        """Give up on digests that are not delivered: their papers become due again, or with
        ``skip`` are never sent to that channel. Returns the digests dropped."""
        stamp = _iso(now)
        dropped = []
        with self.writing("drop digests"):
            for digest_id in digest_ids:
                digest = self._open_digest(digest_id)
                if digest is None:
                    continue
                self.db.execute("UPDATE digests SET dropped_at = ?, updated_at = ? WHERE id = ?",
                                [stamp, stamp, digest_id])
                self.db.execute("UPDATE digest_recipients SET status = 'dropped', "
                                "updated_at = ? WHERE digest_id = ? AND status != 'sent'",
                                [stamp, digest_id])
                if skip and digest.status != "sent":
                    for key in digest.paper_keys:
                        self.db.execute(
                            "INSERT OR IGNORE INTO settled_papers (channel, paper_key, reason,"
                            " settled_at) VALUES (?, ?, 'skipped', ?)",
                            [digest.channel, key, stamp])
                dropped.append(digest)
        for digest in dropped:
            if skip and digest.status != "sent":
                self._journal({"fact": "skipped", "channel": digest.channel,
                               "digest": digest.id, "papers": list(digest.paper_keys),
                               "at": stamp})
        return dropped

    def stuck_digests(self, channel: str | None = None) -> list[OpenDigest]:
        """Digests not delivered (waiting or failed), and sent ones with refused recipients."""
        rows = self.db.execute(
            """SELECT id FROM digests g WHERE dropped_at IS NULL AND (?1 IS NULL OR channel = ?1)
                 AND (status != 'sent' OR EXISTS (
                      SELECT 1 FROM digest_recipients r WHERE r.digest_id = g.id
                        AND r.status IN ('failed_temporary', 'failed_permanent')))
               ORDER BY id""", [channel]).fetchall()
        return [d for d in (self._open_digest(row[0]) for row in rows) if d is not None]

    def _open_digest(self, digest_id: int) -> OpenDigest | None:
        rows = list(self.db.query("SELECT * FROM digests WHERE id = ?", [digest_id]))
        if not rows:
            return None
        row = rows[0]
        keys = tuple(r[0] for r in self.db.execute(
            "SELECT paper_key FROM digest_papers WHERE digest_id = ? ORDER BY rank",
            [digest_id]))
        return OpenDigest(id=row["id"], channel=row["channel"], watchlist=row["watchlist"],
                          status=row["status"], payload=unpack_payload(row["payload"]),
                          parts_sent=row["parts_sent"], attempts=row["attempts"],
                          paper_keys=keys)

    def source_health(self) -> list[dict[str, Any]]:
        """Each source's last success, last error and run of consecutive failures."""
        return list(self.db.query(
            "SELECT source, last_success, last_error, last_error_at, consecutive_failures "
            "FROM source_state ORDER BY source"))

    def digest_counts(self) -> list[dict[str, Any]]:
        """Digests and papers per channel and status."""
        return list(self.db.query(
            """SELECT g.channel, g.state AS status, count(DISTINCT g.id) AS digests,
                      count(dp.paper_key) AS papers, max(g.updated_at) AS last,
                      (SELECT last_error FROM digests x WHERE x.channel = g.channel
                         AND x.status = g.status ORDER BY x.id DESC LIMIT 1) AS last_error
               FROM (SELECT *, CASE WHEN dropped_at IS NULL THEN status ELSE 'dropped' END
                               AS state FROM digests) g
               LEFT JOIN digest_papers dp ON dp.digest_id = g.id
               GROUP BY g.channel, g.state ORDER BY g.channel, g.state"""))

    def deliveries_of(self, key: str) -> list[tuple[str, str, str]]:
        """(channel, watchlist, when) for each channel this paper was delivered to."""
        return [tuple(row) for row in self.db.execute(
            """SELECT d.channel, g.watchlist, d.delivered_at FROM deliveries d
               JOIN digests g ON g.id = d.digest_id WHERE d.paper_key = ?
               ORDER BY d.delivered_at, d.channel""", [key])]

    def requeue(self, channel: str, now: datetime) -> tuple[int, int]:
        """Make a channel's digests that failed for good pending again, unchanged.

        Returns (digests, papers) requeued; the next run sends them before new digests.
        """
        with self.writing(f"requeue the digests of {channel}"):
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM digests WHERE channel = ? AND status = 'failed_permanent' "
                "AND dropped_at IS NULL",
                [channel])]
            papers = 0
            for digest_id in ids:
                papers += self.db.execute(
                    "SELECT count(*) FROM digest_papers WHERE digest_id = ?",
                    [digest_id]).fetchone()[0]
                self.db.execute("UPDATE digests SET status = 'pending', updated_at = ? "
                                "WHERE id = ?", [_iso(now), digest_id])
        return len(ids), papers

    def rename(self, kind: str, old: str, new: str, now: datetime) -> int:
        """File under ``new`` what the store holds under a channel's or watchlist's old name.

        ``kind`` is "channel" or "watchlist". Where both names hold the same fact (a paper
        delivered under each, a reader's rating under each), the row of the new name is
        kept. Moved digests get ``now`` as their updated_at, as any change to a digest does.
        Returns the rows moved: 0 once done, so it is safe to call on every run.
        """
        if kind not in RENAMED_TABLES:
            raise ValueError(f"cannot rename a {kind!r}; only {', '.join(RENAMED_TABLES)}")
        moved = 0
        with self.writing(f"rename {kind} {old} to {new}"):
            present = set(self.db.table_names())
            for table in RENAMED_TABLES[kind]:
                if table not in present:
                    continue
                columns = {c.name for c in self.db.table(table).columns}
                stamp = ", updated_at = ?" if "updated_at" in columns else ""
                moved += self.db.execute(
                    f"UPDATE OR IGNORE {table} SET {kind} = ?{stamp} WHERE {kind} = ?",
                    [new, _iso(now), old] if stamp else [new, old]).rowcount
                # Left behind are only rows the new name holds already.
                self.db.execute(f"DELETE FROM {table} WHERE {kind} = ?", [old])
        return moved

    def delivery_counts(self) -> dict[str, int]:
        """Papers recorded as delivered, by channel name."""
        return {channel: count for channel, count in self.db.execute(
            "SELECT channel, count(*) FROM deliveries GROUP BY channel")}

    # ------------------------------------------------------------------ ratings

    def rate(self, *, watchlist: str, paper_key: str, action: str, origin: str,
             now: datetime, recipient: str = "") -> RatingOutcome:
        """Record a reader's rating of a paper for a watchlist; the same one again is a no-op.

        ``action`` is like, dislike or save (save counts as a like). Each change is logged
        as an event so that it can be undone.
        """
        value = -1 if action == "dislike" else 1
        with self.writing(f"record a rating for {watchlist}"):
            row = self.db.execute(
                "SELECT action FROM ratings WHERE watchlist = ? AND paper_key = ? "
                "AND recipient = ?", [watchlist, paper_key, recipient]).fetchone()
            previous = row[0] if row else None
            if previous == action:
                standing = self.db.execute(
                    "SELECT id, action FROM rating_events WHERE watchlist = ? AND paper_key = ? "
                    "AND recipient = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
                    [watchlist, paper_key, recipient]).fetchone()
                return RatingOutcome(watchlist, paper_key, action, previous, None,
                                     standing[0] if standing and standing[1] == action
                                     else None)
            self.db.execute(
                """INSERT INTO ratings (watchlist, paper_key, recipient, action, value, origin,
                                        created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (watchlist, paper_key, recipient) DO UPDATE SET
                       action = excluded.action, value = excluded.value,
                       origin = excluded.origin, created_at = excluded.created_at""",
                [watchlist, paper_key, recipient, action, value, origin, _iso(now)])
            cursor = self.db.execute(
                """INSERT INTO rating_events (watchlist, paper_key, recipient, action,
                                              previous_action, origin, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [watchlist, paper_key, recipient, action, previous, origin, _iso(now)])
            return RatingOutcome(watchlist, paper_key, action, previous,
                                 int(cursor.lastrowid or 0))

    def undo_rating(self, event_id: int, now: datetime) -> RatingOutcome | None:
        """Take back a rating event; None when it is unknown or undone already.

        The paper's rating becomes what the events still standing make it: that of the
        latest one not undone, or, when every one is undone, what it was before the first
        (nothing, for a paper first rated by them). A later rating of the same paper by the
        same reader wins: undoing an older click then changes nothing but its record.
        """
        with self.writing(f"undo rating event {event_id}"):
            row = self.db.execute(
                "SELECT watchlist, paper_key, recipient, action "
                "FROM rating_events WHERE id = ? AND undone_at IS NULL", [event_id]).fetchone()
            if row is None:
                return None
            watchlist, paper_key, recipient, action = row
            self.db.execute("UPDATE rating_events SET undone_at = ? WHERE id = ?",
                            [_iso(now), event_id])
            events = self.db.execute(
                "SELECT id, action, previous_action, undone_at FROM rating_events "
                "WHERE watchlist = ? AND paper_key = ? AND recipient = ? ORDER BY id",
                [watchlist, paper_key, recipient]).fetchall()
            standing = [e for e in events if e[3] is None]
            if standing and standing[-1][0] > event_id:  # a later click stands: it wins
                return RatingOutcome(watchlist, paper_key, standing[-1][1], action, event_id)
            restored = standing[-1][1] if standing else events[0][2]
            if restored is None:
                self.db.execute("DELETE FROM ratings WHERE watchlist = ? AND paper_key = ? "
                                "AND recipient = ?", [watchlist, paper_key, recipient])
            else:
                self.db.execute(
                    """INSERT INTO ratings (watchlist, paper_key, recipient, action, value,
                                            origin, created_at)
                       VALUES (?, ?, ?, ?, ?, 'undo', ?)
                       ON CONFLICT (watchlist, paper_key, recipient) DO UPDATE SET
                           action = excluded.action, value = excluded.value,
                           created_at = excluded.created_at""",
                    [watchlist, paper_key, recipient, restored,
                     -1 if restored == "dislike" else 1, _iso(now)])
            return RatingOutcome(watchlist, paper_key, restored, action, event_id)

    def ratings(self, watchlist: str | None = None) -> dict[str, dict[str, int]]:
        """Each watchlist's rated papers: +1 liked (or saved), -1 disliked, readers summed.

        A paper that readers rated both ways in equal number is left out.
        """
        sql = ("SELECT watchlist, paper_key, sum(value) FROM ratings "
               + ("WHERE watchlist = ? " if watchlist is not None else "")
               + "GROUP BY watchlist, paper_key ORDER BY watchlist, paper_key")
        out: dict[str, dict[str, int]] = {}
        for name, key, total in self.db.execute(sql, [watchlist] if watchlist else []):
            if total:
                out.setdefault(name, {})[key] = 1 if total > 0 else -1
        return out

    def ratings_fingerprints(
            self, ratings: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, str]:
        """A short digest of each watchlist's ratings: it changes whenever they do.

        ``ratings``, as ``ratings()`` returned them, spares reading them a second time.
        """
        out = {}
        for name, rated in (self.ratings() if ratings is None else ratings).items():
            text = "\n".join(f"{key}\t{value}" for key, value in sorted(rated.items()))
            out[name] = hashlib.sha1(text.encode()).hexdigest()[:16]
        return out

    def saved_models(self) -> dict[str, tuple[str, bytes]]:
        """Trained models by watchlist: (fingerprint of the ratings, serialised model)."""
        return {name: (fingerprint, bytes(blob)) for name, fingerprint, blob in
                self.db.execute("SELECT watchlist, fingerprint, model FROM ranking_models")}

    def save_model(self, watchlist: str, fingerprint: str, model: bytes, now: datetime) -> None:
        with self.writing(f"save the ranking model of {watchlist}"):
            self.db.execute(
                """INSERT INTO ranking_models (watchlist, fingerprint, model, trained_at)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (watchlist) DO UPDATE SET fingerprint = excluded.fingerprint,
                       model = excluded.model, trained_at = excluded.trained_at""",
                [watchlist, fingerprint, model, _iso(now)])

    def delete_model(self, watchlist: str) -> None:
        with self.writing(f"drop the ranking model of {watchlist}"):
            self.db.execute("DELETE FROM ranking_models WHERE watchlist = ?", [watchlist])

    def papers(self, keys: Iterable[str]) -> dict[str, Paper]:
        """Stored papers by key; keys the store does not hold are absent."""
        return {row["key"]: _paper_from_row(row) for row in self._papers_by_key("*", keys)}

    def _papers_by_key(self, columns: str, keys: Iterable[str]) -> Iterator[dict[str, Any]]:
        """These columns of the stored papers with these keys, CHUNK keys a query (under
        SQLite's limit on the values of one statement)."""
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start:start + CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self.db.query(f"SELECT {columns} FROM papers WHERE key IN ({marks})",
                                     chunk)

    def keys_by_doi(self, dois: Iterable[str]) -> dict[str, str]:
        """Keys of the stored papers that carry these DOIs, by normalised DOI.

        A paper keyed by its arXiv id can carry its journal's DOI too; that DOI finds it.
        """
        wanted = {d for d in (normalise_doi(doi) for doi in dois) if d}
        out: dict[str, str] = {}
        if not wanted:
            return out
        for key, doi in self.db.execute("SELECT key, doi FROM papers WHERE doi IS NOT NULL "
                                        "OR key LIKE 'doi:%' ORDER BY key"):
            for candidate in (doi, key[4:] if key.startswith("doi:") else ""):
                found = normalise_doi(candidate) if candidate else None
                if found is not None and found in wanted:
                    out.setdefault(found, key)
        return out

    def delivered_keys(self, channel: str) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT paper_key FROM deliveries WHERE channel = ?", [channel])}

    # ------------------------------------------------------------------ retention

    def prune(self, now: datetime, *, keep_days: int, keep_payload_days: int,
              keep: Iterable[str] = ()) -> Pruned:
        """Forget what is older than the retention, keeping what stops a paper being resent.

        With ``keep_days``, digests that are done with (sent with no recipient waiting, or
        dropped) and untouched for that long go, their deliveries becoming settled papers;
        then papers neither first seen nor changed for that long go, unless readers rated
        them, an open digest holds them, or they are in ``keep`` (seeds). A pruned paper's
        key and first sighting stay in pruned_papers. With ``keep_payload_days``, the
        payload of a digest done with for that long becomes a placeholder. 0 keeps all.
        """
        papers = digests = payloads = 0
        with self.writing("prune old papers and digests"):
            if keep_days:
                cutoff = _iso(now - timedelta(days=keep_days))
                digests = self._prune_digests(cutoff)
                papers = self._prune_papers(cutoff, keep)
            if keep_payload_days:
                payloads = self.db.execute(
                    f"UPDATE digests SET payload = ? WHERE {_DONE_WITH} AND updated_at < ? "
                    "AND payload != ?",
                    [PRUNED_PAYLOAD, _iso(now - timedelta(days=keep_payload_days)),
                     PRUNED_PAYLOAD]).rowcount
        return Pruned(papers=papers, digests=digests, payloads=payloads)

    def _prune_digests(self, cutoff: str) -> int:
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS prune_digests "
                        "(id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.prune_digests")
        self.db.execute(f"INSERT INTO temp.prune_digests SELECT id FROM digests "
                        f"WHERE {_DONE_WITH} AND updated_at < ?", [cutoff])
        chosen = "IN (SELECT id FROM temp.prune_digests)"
        # What was delivered stays settled for its channel once its digest is gone.
        self.db.execute(
            "INSERT OR IGNORE INTO settled_papers (channel, paper_key, reason, settled_at) "
            f"SELECT channel, paper_key, 'delivered', delivered_at FROM deliveries "
            f"WHERE digest_id {chosen}")
        for table in ("deliveries", "digest_recipients", "digest_papers", "digest_overflow"):
            self.db.execute(f"DELETE FROM {table} WHERE digest_id {chosen}")
        return int(self.db.execute(f"DELETE FROM digests WHERE id {chosen}").rowcount)

    def _prune_papers(self, cutoff: str, keep: Iterable[str]) -> int:
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS prune_keep (key TEXT PRIMARY KEY)")
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS prune_papers "
                        "(key TEXT PRIMARY KEY, first_seen TEXT NOT NULL)")
        self.db.execute("DELETE FROM temp.prune_keep")
        self.db.execute("DELETE FROM temp.prune_papers")
        self.db.conn.executemany("INSERT OR IGNORE INTO temp.prune_keep (key) VALUES (?)",
                                 [(key,) for key in keep])
        self.db.execute(
            """INSERT INTO temp.prune_papers (key, first_seen)
               SELECT p.key, p.first_seen FROM papers p
               WHERE p.first_seen < ?1 AND p.updated_at < ?1
                 AND p.key NOT IN (SELECT paper_key FROM ratings)
                 AND p.key NOT IN (SELECT key FROM temp.prune_keep)
                 AND NOT EXISTS (SELECT 1 FROM digest_papers dp WHERE dp.paper_key = p.key)""",
            [cutoff])
        chosen = "IN (SELECT key FROM temp.prune_papers)"
        self.db.execute("INSERT OR REPLACE INTO pruned_papers (key, first_seen) "
                        "SELECT key, first_seen FROM temp.prune_papers")
        self.db.execute(
            "INSERT OR IGNORE INTO settled_papers (channel, paper_key, reason, settled_at) "
            f"SELECT channel, paper_key, 'delivered', delivered_at FROM deliveries "
            f"WHERE paper_key {chosen}")
        for table in ("deliveries", "sightings"):
            self.db.execute(f"DELETE FROM {table} WHERE paper_key {chosen}")
        return int(self.db.execute(f"DELETE FROM papers WHERE key {chosen}").rowcount)

    def vacuum(self) -> None:
        """Rewrite the file without its free pages, then empty the write-ahead log into it."""
        try:
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot compact the store: "
                             f"{describe_store_error(self.path, exc)}") from exc

    def size_on_disk(self) -> int:
        """Bytes the store takes: its file and its write-ahead log."""
        if self.path is None:
            return 0
        files = (self.path, self.path.with_name(self.path.name + "-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    def counts(self) -> dict[str, int]:
        """Rows of what grows with use: papers, digests, deliveries, and papers pruned."""
        tables = ("papers", "digests", "deliveries", "pruned_papers")
        return {table: int(self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in tables}


@contextmanager
def run_lock(store_path: Path) -> Iterator[None]:
    """Hold the run lock of the store at ``store_path`` (a file beside it).

    Another holder makes this raise LockedError naming its pid.
    """
    lock_path = store_path.with_name(store_path.name + ".lock")
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(
                f"another paper-digest run is using {store_path} (pid {holder}); "
                "it will deliver what is due, so this one stops here") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


LOW_DISK_BYTES = 20 * 1024 * 1024  # status turns red below this much free space


def journal_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".journal")


def restore(store_path: Path, backup_path: Path, now: datetime) -> tuple[Path | None, int]:
    """Put a backup in place of the store, then replay the delivery journal into it.

    The store it replaces (if any) is kept beside it, renamed. Papers the journal says were
    delivered or skipped after the backup was taken become settled for their channel, so
    the restored store sends none of them again. Returns (where the old store went, papers
    settled).
    """
    try:
        with closing(sqlite3.connect(f"file:{backup_path}?mode=ro", uri=True)) as probe:
            check = probe.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"{backup_path} is not a usable backup: {exc}") from exc
    if check != "ok":
        raise StoreError(f"{backup_path} fails SQLite's quick_check ({check}); pick another "
                         "backup")
    kept: Path | None = None
    stamp = now.strftime("%Y%m%dT%H%M%S")
    try:
        if store_path.exists():
            kept = store_path.with_name(f"{store_path.name}.replaced-{stamp}")
            os.replace(store_path, kept)
        for suffix in ("-wal", "-shm"):
            leftover = store_path.with_name(store_path.name + suffix)
            if leftover.exists():
                os.replace(leftover, leftover.with_name(f"{leftover.name}.replaced-{stamp}"))
        shutil.copyfile(backup_path, store_path)
    except OSError as exc:
        raise StoreError(f"cannot put {backup_path} in place of {store_path}: "
                         f"{describe_store_error(store_path, exc)}") from exc
    settled = 0
    with Store.open(store_path) as store:
        entries = read_journal(journal_path(store_path))
        with store.writing("replay the delivery journal"):
            for entry in entries:
                reason = "delivered" if entry["fact"] == "delivered" else "skipped"
                marked = _settle_journaled_digest(store, entry) if reason == "delivered" else None
                if marked is not None:
                    settled += marked
                    continue
                for key in entry["papers"]:
                    known = store.db.execute(
                        "SELECT 1 FROM deliveries WHERE channel = ? AND paper_key = ?",
                        [entry["channel"], key]).fetchone()
                    if known:
                        continue
                    cursor = store.db.execute(
                        "INSERT OR IGNORE INTO settled_papers (channel, paper_key, reason, "
                        "settled_at) VALUES (?, ?, ?, ?)",
                        [entry["channel"], key, reason, entry["at"]])
                    settled += cursor.rowcount
    return kept, settled


def _settle_journaled_digest(store: Store, entry: dict[str, Any]) -> int | None:
    """A digest the backup holds as not yet sent, which the journal says went out: mark it
    sent with its deliveries, so the restored store does not send it again.

    Returns the deliveries it added, or None when the backup does not hold that digest.
    """
    digest_id = entry.get("digest")
    if not isinstance(digest_id, int):
        return None
    row = store.db.execute("SELECT channel, status FROM digests WHERE id = ?",
                           [digest_id]).fetchone()
    if row is None or row[0] != entry["channel"]:
        return None
    keys = {r[0] for r in store.db.execute(
        "SELECT paper_key FROM digest_papers WHERE digest_id = ?", [digest_id])}
    if keys != set(entry["papers"]):
        return None  # another digest under a reused id: settle the papers instead
    if row[1] != "sent":
        store.db.execute("UPDATE digests SET status = 'sent', last_error = NULL, "
                         "updated_at = ? WHERE id = ?", [entry["at"], digest_id])
    cursor = store.db.execute(
        """INSERT OR IGNORE INTO deliveries (channel, paper_key, digest_id, delivered_at)
           SELECT ?, paper_key, digest_id, ? FROM digest_papers WHERE digest_id = ?""",
        [entry["channel"], entry["at"], digest_id])
    return int(cursor.rowcount)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's entries; a line cut short by a crash is passed over."""
    if not path.exists():
        return []
    entries = []
    with open(path, encoding="utf-8", errors="replace") as journal:
        for line in journal:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (isinstance(entry, dict) and entry.get("fact") in ("delivered", "skipped")
                    and isinstance(entry.get("papers"), list)
                    and isinstance(entry.get("channel"), str)):
                entries.append(entry)
    return entries


def _merged(old: dict[str, Any], values: dict[str, Any], paper: Paper) -> dict[str, Any]:
    """A stored row with what a new sighting of its paper adds (``values`` is its row)."""
    merged = dict(old)
    newer = (paper.version or 0) > (old["version"] or 0)
    for column in ("title", "abstract", "url", "authors"):
        if values[column] and (newer or not old[column] or old[column] == "[]"):
            merged[column] = values[column]
    for column in ("arxiv_id", "doi", "primary_category", "announce_type", "published",
                   "comment", "journal_ref"):
        if values[column] and (not old[column] or (newer and column != "announce_type")):
            merged[column] = values[column]
    # Links and counts change upstream (a repository appears, gains stars): the latest
    # source that knows one wins. A summary moves together with who wrote it.
    for column in ("hf_url", "code_url", "project_url"):
        if values[column]:
            merged[column] = values[column]
    if values["summary"]:
        merged["summary"] = values["summary"]
        merged["summary_source"] = values["summary_source"]
    if paper.code_stars is not None:
        merged["code_stars"] = paper.code_stars
    merged["version"] = max(old["version"] or 0, paper.version or 0) or None
    categories = json.loads(old["categories"])
    categories += [c for c in paper.categories if c not in categories]
    merged["categories"] = json.dumps(categories)
    if paper.upvotes is not None:
        merged["upvotes"] = paper.upvotes
    return merged


def _paper_row(paper: Paper) -> dict[str, Any]:
    return {
        "key": paper.key,
        "arxiv_id": paper.arxiv_id,
        "version": paper.version,
        "doi": paper.doi,
        "title": paper.title,
        "abstract": paper.abstract,
        "authors": json.dumps(list(paper.authors), ensure_ascii=False),
        "url": paper.url,
        "categories": json.dumps(list(paper.categories)),
        "primary_category": paper.primary_category,
        "announce_type": paper.announce_type,
        "published": paper.published.isoformat() if paper.published else None,
        "upvotes": paper.upvotes,
        "comment": paper.comment,
        "journal_ref": paper.journal_ref,
        "hf_url": paper.hf_url,
        "code_url": paper.code_url,
        "code_stars": paper.code_stars,
        "project_url": paper.project_url,
        "summary": paper.summary,
        "summary_source": paper.summary_source,
    }


def reasons_json(reasons: Iterable[Reason]) -> str:
    """A match's reasons as kept: one list per reason, its fields in order."""
    return json.dumps([[r.kind, r.value, r.field, r.points, r.count, r.weight]
                       for r in reasons], ensure_ascii=False)


@lru_cache(maxsize=1 << 16)
def reasons_from_json(text: str) -> tuple[Reason, ...]:
    """Reasons read back. Many kept matches share the same reasons (one term, in the title):
    they share the one tuple read, which is immutable."""
    return tuple(Reason(sys.intern(kind), value, sys.intern(field), points, count, weight)
                 for kind, value, field, points, count, weight in json.loads(text))


def _paper_from_row(row: dict[str, Any]) -> Paper:
    return Paper(
        key=row["key"],
        title=row["title"],
        url=row["url"],
        abstract=row["abstract"],
        authors=tuple(json.loads(row["authors"])),
        arxiv_id=row["arxiv_id"],
        version=row["version"],
        doi=row["doi"],
        categories=tuple(json.loads(row["categories"])),
        primary_category=row["primary_category"],
        announce_type=row["announce_type"],
        published=datetime.fromisoformat(row["published"]) if row["published"] else None,
        upvotes=row["upvotes"],
        comment=row["comment"],
        journal_ref=row["journal_ref"],
        hf_url=row["hf_url"],
        code_url=row["code_url"],
        code_stars=row["code_stars"],
        project_url=row["project_url"],
        summary=row["summary"],
        summary_source=row["summary_source"],
    )
