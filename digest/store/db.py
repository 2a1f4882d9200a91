"""Store operations. Each fact is written after it happened, in one transaction."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from digest.errors import LockedError, StoreError
from digest.models import Digest, Paper, normalise_doi, parse_arxiv_id
from digest.sources.base import SourceState
from digest.store.schema import migrate


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

    @property
    def changed(self) -> bool:
        return self.event_id is not None


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


class Store:
    def __init__(self, db: sqlite_utils.Database, path: Path | None = None) -> None:
        self.db = db
        self.path = path

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
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        return cls(db, path)

    def close(self) -> None:
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
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole run
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise LockedError(
                    f"another paper-digest run is using {self.path} (pid {holder}); "
                    "it will deliver what is due, so this one stops here") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()

    # ------------------------------------------------------------------ papers

    def record_batch(
        self, source: str, papers: Iterable[Paper], state: SourceState, now: datetime
    ) -> tuple[int, int]:
        """Store what a source listed; return (new papers, already known papers)."""
        new = known = 0
        stamp = _iso(now)
        with self.writing(f"record papers from {source}"):
            seen_keys: set[str] = set()
            for paper in papers:
                if paper.key in seen_keys:
                    continue
                seen_keys.add(paper.key)
                if self._merge_paper(paper, stamp):
                    new += 1
                else:
                    known += 1
                self.db.execute(
                    """INSERT INTO sightings (paper_key, source, announce_type, version,
                                              first_seen, last_seen)
                       VALUES (?, ?, ?, ?, ?, ?)
                       ON CONFLICT (paper_key, source) DO UPDATE SET
                           announce_type = excluded.announce_type,
                           version = max(coalesce(version, 0), coalesce(excluded.version, 0)),
                           last_seen = excluded.last_seen""",
                    [paper.key, source, paper.announce_type, paper.version, stamp, stamp],
                )
            self.db.execute(
                """INSERT INTO source_state (source, etag, last_modified, last_success,
                                             consecutive_failures)
                   VALUES (?, ?, ?, ?, 0)
                   ON CONFLICT (source) DO UPDATE SET etag = excluded.etag,
                       last_modified = excluded.last_modified,
                       last_success = excluded.last_success, consecutive_failures = 0""",
                [source, state.etag, state.last_modified, stamp],
            )
        return new, known

    def record_references(self, papers: Iterable[Paper], now: datetime) -> int:
        """Store papers looked up for a reason other than news (seeds, imported likes).

        They are not listings: their ``first_seen`` is their publication date when older,
        so they stay out of the lookback window and are never sent as new. No sighting or
        source state is written. Returns how many were new to the store.
        """
        stamp = _iso(now)
        new = 0
        with self.writing("record looked-up papers"):
            for paper in papers:
                first_seen = stamp
                if paper.published is not None:
                    published = _iso(paper.published.astimezone(now.tzinfo))
                    first_seen = min(first_seen, published)
                new += self._merge_paper(paper, stamp, first_seen=first_seen)
        return new

    def _merge_paper(self, paper: Paper, stamp: str, *, first_seen: str | None = None) -> bool:
        row = self.db.execute("SELECT * FROM papers WHERE key = ?", [paper.key]).fetchone()
        values = _paper_row(paper)
        if row is None:
            self.db.table("papers").insert({**values, "first_seen": first_seen or stamp,
                                            "updated_at": stamp})
            return True
        old = dict(zip([d[0] for d in self.db.execute("SELECT * FROM papers LIMIT 0")
                        .description], row, strict=True))
        merged = dict(old)
        newer = (paper.version or 0) > (old["version"] or 0)
        for column in ("title", "abstract", "url", "authors"):
            if values[column] and (newer or not old[column] or old[column] == "[]"):
                merged[column] = values[column]
        for column in ("arxiv_id", "doi", "primary_category", "announce_type", "published",
                       "comment", "journal_ref"):
            if values[column] and (not old[column] or (newer and column != "announce_type")):
                merged[column] = values[column]
        merged["version"] = max(old["version"] or 0, paper.version or 0) or None
        categories = json.loads(old["categories"])
        categories += [c for c in paper.categories if c not in categories]
        merged["categories"] = json.dumps(categories)
        if paper.upvotes is not None:
            merged["upvotes"] = paper.upvotes
        if merged != old:
            merged["updated_at"] = stamp
            self.db.table("papers").update(paper.key, merged)
        return False

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
        pattern = "%" + "%".join(wanted.split()) + "%"
        rows = self.db.query("SELECT * FROM papers WHERE title LIKE ? ORDER BY first_seen DESC "
                             "LIMIT ?", [pattern, limit])
        return [_paper_from_row(row) for row in rows]

    def sources_of(self, key: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT source FROM sightings WHERE paper_key = ? ORDER BY source", [key])]

    def recent(self, since: datetime) -> list[Paper]:
        """Papers first seen since ``since``, oldest first."""
        rows = self.db.query("SELECT * FROM papers WHERE first_seen >= ? "
                             "ORDER BY first_seen, key", [_iso(since)])
        return [_paper_from_row(row) for row in rows]

    def candidate_keys(self, channel: str, since: datetime) -> set[str]:
        """Keys of the papers first seen since ``since`` this channel has not had or queued."""
        rows = self.db.execute(
            """SELECT p.key FROM papers p
               WHERE p.first_seen >= ?
                 AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.channel = ? AND d.paper_key = p.key)
                 AND NOT EXISTS (SELECT 1 FROM digest_papers dp JOIN digests g
                                   ON g.id = dp.digest_id
                                 WHERE g.channel = ? AND dp.paper_key = p.key
                                   AND g.status != 'sent')""",
            [_iso(since), channel, channel],
        )
        return {row[0] for row in rows}

    # ------------------------------------------------------------------ digests

    def create_digest(self, digest: Digest, payload: dict[str, Any], now: datetime) -> int:
        """Record a composed digest as pending, before anything is sent."""
        stamp = _iso(now)
        with self.writing(f"record the digest for {digest.channel}"):
            cursor = self.db.execute(
                """INSERT INTO digests (channel, watchlist, status, payload, created_at,
                                        updated_at)
                   VALUES (?, ?, 'pending', ?, ?, ?)""",
                [digest.channel, digest.watchlist, json.dumps(payload), stamp, stamp],
            )
            digest_id = int(cursor.lastrowid or 0)
            for rank, match in enumerate(digest.matches, start=1):
                self.db.execute(
                    "INSERT INTO digest_papers (digest_id, paper_key, rank, score) "
                    "VALUES (?, ?, ?, ?)",
                    [digest_id, match.paper.key, rank, match.score],
                )
        return digest_id

    def open_digests(self, channels: Iterable[str] | None = None) -> list[OpenDigest]:
        rows = list(self.db.query(
            "SELECT * FROM digests WHERE status IN ('pending', 'failed_temporary') ORDER BY id"))
        wanted = set(channels) if channels is not None else None
        out = []
        for row in rows:
            if wanted is not None and row["channel"] not in wanted:
                continue
            keys = tuple(r[0] for r in self.db.execute(
                "SELECT paper_key FROM digest_papers WHERE digest_id = ? ORDER BY rank",
                [row["id"]]))
            out.append(OpenDigest(
                id=row["id"], channel=row["channel"], watchlist=row["watchlist"],
                status=row["status"], payload=json.loads(row["payload"]),
                parts_sent=row["parts_sent"], attempts=row["attempts"], paper_keys=keys))
        return out

    def mark_part_sent(self, digest_id: int, parts_sent: int, now: datetime) -> None:
        """A channel accepted part ``parts_sent`` of a multi-part digest."""
        with self.writing(f"record part {parts_sent} of digest {digest_id} as sent"):
            self.db.execute("UPDATE digests SET parts_sent = ?, updated_at = ? WHERE id = ?",
                            [parts_sent, _iso(now), digest_id])

    def mark_sent(self, digest_id: int, now: datetime) -> None:
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

    def mark_failed(self, digest_id: int, error: str, *, permanent: bool, now: datetime) -> None:
        status = "failed_permanent" if permanent else "failed_temporary"
        with self.writing(f"record the failure of digest {digest_id}"):
            self.db.execute(
                "UPDATE digests SET status = ?, attempts = attempts + 1, last_error = ?,"
                " updated_at = ? WHERE id = ?", [status, error, _iso(now), digest_id])

    def source_health(self) -> list[dict[str, Any]]:
        """Each source's last success, last error and run of consecutive failures."""
        return list(self.db.query(
            "SELECT source, last_success, last_error, last_error_at, consecutive_failures "
            "FROM source_state ORDER BY source"))

    def digest_counts(self) -> list[dict[str, Any]]:
        """Digests and papers per channel and status."""
        return list(self.db.query(
            """SELECT g.channel, g.status, count(DISTINCT g.id) AS digests,
                      count(dp.paper_key) AS papers, max(g.updated_at) AS last,
                      (SELECT last_error FROM digests x WHERE x.channel = g.channel
                         AND x.status = g.status ORDER BY x.id DESC LIMIT 1) AS last_error
               FROM digests g LEFT JOIN digest_papers dp ON dp.digest_id = g.id
               GROUP BY g.channel, g.status ORDER BY g.channel, g.status"""))

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
                "SELECT id FROM digests WHERE channel = ? AND status = 'failed_permanent'",
                [channel])]
            papers = 0
            for digest_id in ids:
                papers += self.db.execute(
                    "SELECT count(*) FROM digest_papers WHERE digest_id = ?",
                    [digest_id]).fetchone()[0]
                self.db.execute("UPDATE digests SET status = 'pending', updated_at = ? "
                                "WHERE id = ?", [_iso(now), digest_id])
        return len(ids), papers

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
                return RatingOutcome(watchlist, paper_key, action, previous, None)
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
        """Put back what a rating event replaced; None when it is unknown or undone already.

        A later rating of the same paper by the same reader wins: undoing an older click
        then changes nothing but the event's record.
        """
        with self.writing(f"undo rating event {event_id}"):
            row = self.db.execute(
                "SELECT watchlist, paper_key, recipient, action, previous_action, origin "
                "FROM rating_events WHERE id = ? AND undone_at IS NULL", [event_id]).fetchone()
            if row is None:
                return None
            watchlist, paper_key, recipient, action, previous, origin = row
            self.db.execute("UPDATE rating_events SET undone_at = ? WHERE id = ?",
                            [_iso(now), event_id])
            current = self.db.execute(
                "SELECT action FROM ratings WHERE watchlist = ? AND paper_key = ? "
                "AND recipient = ?", [watchlist, paper_key, recipient]).fetchone()
            if current is None or current[0] != action:
                return RatingOutcome(watchlist, paper_key, current[0] if current else None,
                                     action, event_id)
            if previous is None:
                self.db.execute("DELETE FROM ratings WHERE watchlist = ? AND paper_key = ? "
                                "AND recipient = ?", [watchlist, paper_key, recipient])
            else:
                self.db.execute(
                    "UPDATE ratings SET action = ?, value = ?, created_at = ? "
                    "WHERE watchlist = ? AND paper_key = ? AND recipient = ?",
                    [previous, -1 if previous == "dislike" else 1, _iso(now), watchlist,
                     paper_key, recipient])
            return RatingOutcome(watchlist, paper_key, previous, action, event_id)

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

    def ratings_fingerprints(self) -> dict[str, str]:
        """A short digest of each watchlist's ratings: it changes whenever they do."""
        out = {}
        for name, ratings in self.ratings().items():
            text = "\n".join(f"{key}\t{value}" for key, value in sorted(ratings.items()))
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
        wanted = list(dict.fromkeys(keys))
        out: dict[str, Paper] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(f"SELECT * FROM papers WHERE key IN ({marks})", chunk):
                out[row["key"]] = _paper_from_row(row)
        return out

    def delivered_keys(self, channel: str) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT paper_key FROM deliveries WHERE channel = ?", [channel])}


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
    }


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
    )
