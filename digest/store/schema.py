"""Schema and migrations. Each migration runs once, in order, inside a transaction."""

from __future__ import annotations

import sqlite_utils

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE papers (
        key TEXT PRIMARY KEY,
        arxiv_id TEXT,
        version INTEGER,
        doi TEXT,
        title TEXT NOT NULL,
        abstract TEXT NOT NULL DEFAULT '',
        authors TEXT NOT NULL DEFAULT '[]',
        url TEXT NOT NULL DEFAULT '',
        categories TEXT NOT NULL DEFAULT '[]',
        primary_category TEXT,
        announce_type TEXT,
        published TEXT,
        upvotes INTEGER,
        comment TEXT,
        journal_ref TEXT,
        first_seen TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX papers_first_seen ON papers(first_seen);
    CREATE TABLE sightings (
        paper_key TEXT NOT NULL REFERENCES papers(key),
        source TEXT NOT NULL,
        announce_type TEXT,
        version INTEGER,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        PRIMARY KEY (paper_key, source)
    );
    CREATE TABLE source_state (
        source TEXT PRIMARY KEY,
        etag TEXT,
        last_modified TEXT,
        last_success TEXT,
        last_error TEXT,
        last_error_at TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE digests (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        watchlist TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('pending', 'sent', 'failed_temporary', 'failed_permanent')),
        payload TEXT NOT NULL,
        parts_sent INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX digests_open ON digests(status, channel);
    CREATE TABLE digest_papers (
        digest_id INTEGER NOT NULL REFERENCES digests(id),
        paper_key TEXT NOT NULL REFERENCES papers(key),
        rank INTEGER NOT NULL,
        score REAL NOT NULL,
        PRIMARY KEY (digest_id, paper_key)
    );
    CREATE INDEX digest_papers_key ON digest_papers(paper_key);
    CREATE TABLE deliveries (
        channel TEXT NOT NULL,
        paper_key TEXT NOT NULL REFERENCES papers(key),
        digest_id INTEGER NOT NULL REFERENCES digests(id),
        delivered_at TEXT NOT NULL,
        PRIMARY KEY (channel, paper_key)
    );
    """,
    # 2: ratings from readers, per-recipient delivery of email digests, trained models
    """
    CREATE TABLE ratings (
        watchlist TEXT NOT NULL,
        paper_key TEXT NOT NULL REFERENCES papers(key),
        recipient TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL CHECK (action IN ('like', 'dislike', 'save')),
        value INTEGER NOT NULL CHECK (value IN (-1, 1)),
        origin TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (watchlist, paper_key, recipient)
    );
    CREATE INDEX ratings_watchlist ON ratings(watchlist);
    CREATE TABLE rating_events (
        id INTEGER PRIMARY KEY,
        watchlist TEXT NOT NULL,
        paper_key TEXT NOT NULL,
        recipient TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        previous_action TEXT,
        origin TEXT NOT NULL,
        undone_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE ranking_models (
        watchlist TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        model BLOB NOT NULL,
        trained_at TEXT NOT NULL
    );
    CREATE TABLE digest_recipients (
        digest_id INTEGER NOT NULL REFERENCES digests(id),
        recipient TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('sent', 'failed_temporary', 'failed_permanent', 'dropped')),
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 1,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (digest_id, recipient)
    );
    """,
]


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema up to date; return the schema version now in force."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= current:
            continue
        with db.atomic():
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)
