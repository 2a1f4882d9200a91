"""Schema and migrations. Each migration runs once, in order, inside a transaction."""

from __future__ import annotations

import sqlite3

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
    # 3: digests a user dropped, the channel settings a digest failed with, and papers that
    #    must never be sent to a channel though no digest here records them (delivered
    #    before a restore, or skipped on purpose)
    """
    ALTER TABLE digests ADD COLUMN dropped_at TEXT;
    ALTER TABLE digests ADD COLUMN channel_fingerprint TEXT;
    CREATE TABLE settled_papers (
        channel TEXT NOT NULL,
        paper_key TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('delivered', 'skipped')),
        settled_at TEXT NOT NULL,
        PRIMARY KEY (channel, paper_key)
    );
    """,
    # 4: arXiv announcement days an arxiv_rss source missed, and whether the catch-up through
    #    the API has backfilled them (pending until every page of the day is stored; expired
    #    when it fell out of catch_up_days before it could be)
    """
    CREATE TABLE catch_up (
        source TEXT NOT NULL,
        announced_on TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'expired')),
        papers INTEGER NOT NULL DEFAULT 0,
        new INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (source, announced_on)
    );
    """,
    # 5: papers pruned for age, by key: one listed again comes back with its first sighting,
    #    so it is neither new nor a candidate, as if it had never left; and digests by age,
    #    so that pruning finds the old ones without reading through their payloads
    """
    CREATE TABLE pruned_papers (
        key TEXT PRIMARY KEY,
        first_seen TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX digests_age ON digests(updated_at, status, dropped_at);
    """,
    # 6: what a digest links besides the abstract (Hugging Face page, code and its stars,
    #    project page) and a one-line summary with who wrote it
    """
    ALTER TABLE papers ADD COLUMN hf_url TEXT;
    ALTER TABLE papers ADD COLUMN code_url TEXT;
    ALTER TABLE papers ADD COLUMN code_stars INTEGER;
    ALTER TABLE papers ADD COLUMN project_url TEXT;
    ALTER TABLE papers ADD COLUMN summary TEXT;
    ALTER TABLE papers ADD COLUMN summary_source TEXT;
    """,
    # 7: papers arXiv was asked about for the categories and authors their source left out
    #    (asked once, found or not), and each watchlist's latest preview, to tell the next
    #    preview what it gained and lost
    """
    CREATE TABLE arxiv_lookups (
        key TEXT PRIMARY KEY,
        found INTEGER NOT NULL CHECK (found IN (0, 1)),
        asked_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE previews (
        watchlist TEXT PRIMARY KEY,
        definition TEXT NOT NULL,
        paper_keys TEXT NOT NULL DEFAULT '[]',
        days INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 8: what a digest matched but left out (max_papers or the channel's size), ranked on
    #    from where the digest stops, with why each matched, and how many were left out in
    #    all: the web app's page behind the digest's "N more" link. Recorded only when the
    #    web app is configured. No reference to papers: pruning a paper leaves a gap here.
    """
    CREATE TABLE digest_overflow (
        digest_id INTEGER NOT NULL REFERENCES digests(id),
        rank INTEGER NOT NULL,
        paper_key TEXT NOT NULL,
        score REAL NOT NULL,
        reasons TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (digest_id, rank)
    ) WITHOUT ROWID;
    ALTER TABLE digests ADD COLUMN left_out INTEGER;
    """,
    # 9: each watchlist's matches kept from run to run, so that a run scores only the papers
    #    new or changed since the watchlist was last scored as it stands. paper_changes gives
    #    every paper a number that grows each time it is added or a field scoring reads
    #    changes (the triggers keep it, whoever writes the papers); scoring_state says up to
    #    which number each watchlist was scored, and under which definition of it.
    #    word_forms keeps the singular and plural forms of the watchlists' words, so that
    #    a run finds them without asking inflect again.
    """
    CREATE TABLE paper_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        paper_key TEXT NOT NULL UNIQUE
    );
    INSERT INTO paper_changes (paper_key) SELECT key FROM papers ORDER BY first_seen, key;
    CREATE TRIGGER papers_added AFTER INSERT ON papers BEGIN
        INSERT OR REPLACE INTO paper_changes (paper_key) VALUES (NEW.key);
    END;
    CREATE TRIGGER papers_changed AFTER UPDATE ON papers
    WHEN OLD.key IS NOT NEW.key OR OLD.title IS NOT NEW.title
        OR OLD.abstract IS NOT NEW.abstract OR OLD.authors IS NOT NEW.authors
        OR OLD.categories IS NOT NEW.categories
        OR OLD.primary_category IS NOT NEW.primary_category
        OR OLD.published IS NOT NEW.published OR OLD.upvotes IS NOT NEW.upvotes
        OR OLD.first_seen IS NOT NEW.first_seen
    BEGIN
        DELETE FROM paper_changes WHERE paper_key = OLD.key;
        INSERT OR REPLACE INTO paper_changes (paper_key) VALUES (NEW.key);
    END;
    CREATE TRIGGER papers_removed AFTER DELETE ON papers BEGIN
        DELETE FROM paper_changes WHERE paper_key = OLD.key;
    END;
    CREATE TABLE scoring_state (
        watchlist TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        through INTEGER NOT NULL,
        scored_at TEXT NOT NULL
    );
    CREATE TABLE matches (
        watchlist TEXT NOT NULL,
        paper_key TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        score REAL NOT NULL,
        reasons TEXT NOT NULL,
        PRIMARY KEY (watchlist, paper_key)
    ) WITHOUT ROWID;
    CREATE INDEX matches_first_seen ON matches(first_seen);
    CREATE TABLE word_forms (
        word TEXT PRIMARY KEY,
        made_by TEXT NOT NULL,
        forms TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 10: how many stored papers hold each word, for similar_to, kept up to date from run
    #     to run instead of counted over the whole store each time. A paper changed or
    #     deleted after it was counted leaves its counted title and abstract behind (the
    #     same change that gives it a new change number, which has it counted again), so
    #     the next count takes those words off.
    """
    CREATE TABLE term_counts (
        term TEXT PRIMARY KEY,
        papers INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE term_counts_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        through INTEGER NOT NULL,
        papers INTEGER NOT NULL
    );
    CREATE TABLE term_counts_retired (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        abstract TEXT NOT NULL
    );
    CREATE TRIGGER papers_recounted BEFORE UPDATE ON papers
    WHEN (OLD.key IS NOT NEW.key OR OLD.title IS NOT NEW.title
        OR OLD.abstract IS NOT NEW.abstract OR OLD.authors IS NOT NEW.authors
        OR OLD.categories IS NOT NEW.categories
        OR OLD.primary_category IS NOT NEW.primary_category
        OR OLD.published IS NOT NEW.published OR OLD.upvotes IS NOT NEW.upvotes
        OR OLD.first_seen IS NOT NEW.first_seen)
        AND (SELECT seq FROM paper_changes WHERE paper_key = OLD.key)
            <= (SELECT through FROM term_counts_state)
    BEGIN
        INSERT INTO term_counts_retired (title, abstract) VALUES (OLD.title, OLD.abstract);
    END;
    CREATE TRIGGER papers_uncounted BEFORE DELETE ON papers
    WHEN (SELECT seq FROM paper_changes WHERE paper_key = OLD.key)
        <= (SELECT through FROM term_counts_state)
    BEGIN
        INSERT INTO term_counts_retired (title, abstract) VALUES (OLD.title, OLD.abstract);
    END;
    """,
    # 11: indexes for the questions a daily run asks of a store that has run for a year
    #     (a year of 1,000 channels is millions of deliveries): what each channel had of
    #     the window's papers, found from those papers rather than by reading every
    #     delivery; the deliveries and ratings of a digest or paper being pruned, which
    #     SQLite looks up for each one it deletes (its foreign keys), else by reading them
    #     all each time; and a channel's latest digest of a watchlist, which a heartbeat
    #     asks for.
    """
    CREATE INDEX digests_latest ON digests(channel, watchlist, dropped_at, created_at);
    CREATE INDEX deliveries_by_paper ON deliveries(paper_key, channel);
    CREATE INDEX deliveries_by_digest ON deliveries(digest_id);
    CREATE INDEX settled_by_paper ON settled_papers(paper_key, channel);
    CREATE INDEX ratings_by_paper ON ratings(paper_key);
    """,
    # 12: the word counts that similar_to and likes are weighed by, as taken at one moment
    #     and kept a while: papers scored under them need no scoring again while they hold.
    """
    CREATE TABLE term_weights (term TEXT PRIMARY KEY, papers INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE term_weights_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        papers INTEGER NOT NULL,
        taken INTEGER NOT NULL
    );
    """,
    # 13: how many papers came, went or changed since the counts were taken, which says
    #     when to take them anew (a store that prunes as many as it adds keeps its count),
    #     and which taking it is, so that no two takings are ever confused.
    """
    ALTER TABLE term_weights_state ADD COLUMN moved INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE term_weights_state ADD COLUMN taking INTEGER NOT NULL DEFAULT 1;
    """,
]


def statements(script: str) -> list[str]:
    """A migration's statements, whole: a trigger's body holds semicolons of its own."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending.strip())
    return out


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema up to date; return the schema version now in force."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= current:
            continue
        with db.atomic():
            for statement in statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)
