"""The database schema, as forward-only migrations (sqlite-utils ``Migrations``).

The schema is a public interface: users query it with SQL and Datasette.
Add migrations at the end; never edit or reorder an applied one.
Every column is documented in docs/database.md (PostgreSQL: docs/postgresql.md).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlite_utils import Database, Migrations

from aggregator.store.db import SQLITE, SQLiteDatabase
from aggregator.store.db import Database as StoreDatabase
from aggregator.store.schema_shared import SHARED

migrations = Migrations("aggregator")

_CORE = [
    """
    CREATE TABLE sources (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        url TEXT NOT NULL,
        config_url TEXT NOT NULL,
        title TEXT,
        interval_seconds REAL,
        active INTEGER NOT NULL DEFAULT 1,
        added_at TEXT NOT NULL,
        last_fetch_at TEXT,
        last_success_at TEXT,
        last_change_at TEXT,
        last_error TEXT,
        last_error_at TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        etag TEXT,
        last_modified TEXT,
        body_sha256 TEXT,
        next_check_at TEXT
    )
    """,
    """
    CREATE TABLE fetches (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        started_at TEXT NOT NULL,
        url TEXT NOT NULL,
        final_url TEXT,
        status INTEGER,
        outcome TEXT NOT NULL
            CHECK (outcome IN ('changed', 'unchanged', 'not_modified', 'same_body', 'error')),
        bytes INTEGER,
        duration_ms INTEGER,
        etag TEXT,
        last_modified TEXT,
        error TEXT,
        entries INTEGER,
        changes INTEGER
    )
    """,
    """
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        key TEXT NOT NULL,
        url TEXT,
        title TEXT,
        published_at TEXT,
        first_seen_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        removed_at TEXT,
        position INTEGER,
        version_count INTEGER NOT NULL DEFAULT 0,
        current_version_id INTEGER REFERENCES versions(id),
        UNIQUE (source_id, key)
    )
    """,
    """
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        entry_id INTEGER NOT NULL REFERENCES entries(id),
        version INTEGER NOT NULL,
        title TEXT,
        link TEXT,
        author TEXT,
        summary TEXT,
        content TEXT,
        summary_text TEXT,
        content_text TEXT,
        published_at TEXT,
        updated_at TEXT,
        content_hash TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        fetch_id INTEGER REFERENCES fetches(id),
        UNIQUE (entry_id, version)
    )
    """,
    """
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        entry_id INTEGER NOT NULL REFERENCES entries(id),
        kind TEXT NOT NULL CHECK (kind IN ('new', 'changed', 'removed', 'restored')),
        fields TEXT NOT NULL DEFAULT '[]',
        edit TEXT,
        old_version_id INTEGER REFERENCES versions(id),
        new_version_id INTEGER REFERENCES versions(id),
        detected_at TEXT NOT NULL,
        fetch_id INTEGER REFERENCES fetches(id)
    )
    """,
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        source_id INTEGER REFERENCES sources(id),
        entry_id INTEGER REFERENCES entries(id),
        change_id INTEGER REFERENCES changes(id),
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_entries_source ON entries (source_id, removed_at)",
    "CREATE INDEX idx_versions_entry ON versions (entry_id, seen_at)",
    "CREATE INDEX idx_changes_detected ON changes (detected_at)",
    "CREATE INDEX idx_changes_entry ON changes (entry_id, detected_at)",
    "CREATE INDEX idx_changes_source ON changes (source_id, detected_at)",
    "CREATE INDEX idx_fetches_source ON fetches (source_id, started_at)",
    "CREATE INDEX idx_fetches_started ON fetches (started_at)",
    "CREATE INDEX idx_outbox_created ON outbox (created_at)",
]


@migrations(name="0001_core")
def _core(db: Database) -> None:
    for statement in _CORE:
        db.execute(statement)


_SCHEDULING = [
    # the adaptive interval the scheduler is using now, and why next_check_at is what it is
    "ALTER TABLE sources ADD COLUMN interval_now_seconds REAL",
    "ALTER TABLE sources ADD COLUMN schedule_reason TEXT",
    # 410 Gone: polling stopped at gone_at while the URL was gone_url (a new URL resumes it)
    "ALTER TABLE sources ADD COLUMN gone_at TEXT",
    "ALTER TABLE sources ADD COLUMN gone_url TEXT",
    # the last permanent redirect: the URL we followed it from, and when
    "ALTER TABLE sources ADD COLUMN moved_from TEXT",
    "ALTER TABLE sources ADD COLUMN moved_at TEXT",
    """
    CREATE TABLE daemon_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pid INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('starting', 'running', 'stopping', 'stopped')),
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        config_path TEXT,
        summary TEXT,
        inflight TEXT NOT NULL DEFAULT '[]',
        network TEXT NOT NULL DEFAULT 'up'
    )
    """,
    "CREATE INDEX idx_sources_next_check ON sources (next_check_at)",
]


@migrations(name="0004_scheduling")
def _scheduling(db: Database) -> None:
    for statement in _SCHEDULING:
        db.execute(statement)


def migrate(db: StoreDatabase) -> list[str]:
    """Apply pending migrations (either backend); return the names applied."""
    if db.dialect is not SQLITE:
        from aggregator.store import schema_pg

        return schema_pg.migrate(db)
    sqlite = Database(db.conn)  # type: ignore[attr-defined]
    names = [m.name for m in migrations.pending(sqlite)]
    if names:
        migrations.apply(sqlite)
    return names


def pending(db: StoreDatabase) -> list[str]:
    """The names of the migrations not applied yet."""
    if db.dialect is not SQLITE:
        from aggregator.store import schema_pg

        return schema_pg.pending(db)
    return [m.name for m in migrations.pending(Database(db.conn))]  # type: ignore[attr-defined]


_DELIVERIES = [
    """
    CREATE TABLE sinks (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        added_at TEXT NOT NULL,
        cursor INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        sink_id INTEGER NOT NULL REFERENCES sinks(id),
        outbox_id INTEGER NOT NULL REFERENCES outbox(id),
        folded TEXT NOT NULL DEFAULT '[]',
        batch_key TEXT,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed', 'dropped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at TEXT NOT NULL,
        next_attempt_at TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (sink_id, outbox_id)
    )
    """,
    """
    CREATE TABLE delivery_attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        sink_id INTEGER NOT NULL REFERENCES sinks(id),
        at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('delivered', 'retry', 'failed')),
        code INTEGER,
        error TEXT,
        duration_ms INTEGER
    )
    """,
    "CREATE INDEX idx_deliveries_queue ON deliveries (sink_id, status, id)",
    "CREATE INDEX idx_deliveries_batch ON deliveries (sink_id, batch_key, status)",
    "CREATE INDEX idx_delivery_attempts ON delivery_attempts (delivery_id, at)",
]


@migrations(name="0002_deliveries")
def _deliveries(db: Database) -> None:
    for statement in _DELIVERIES:
        db.execute(statement)


_SEARCH_AND_VIEWS = [
    # Full-text index over every version's text (an external-content FTS5 table:
    # the text lives once, in versions). Triggers keep it in step with writes.
    """
    CREATE VIRTUAL TABLE versions_fts USING fts5(
        title, summary_text, content_text,
        content='versions', content_rowid='id', tokenize='porter unicode61'
    )
    """,
    """
    CREATE TRIGGER versions_fts_insert AFTER INSERT ON versions BEGIN
        INSERT INTO versions_fts (rowid, title, summary_text, content_text)
        VALUES (new.id, new.title, new.summary_text, new.content_text);
    END
    """,
    """
    CREATE TRIGGER versions_fts_delete AFTER DELETE ON versions BEGIN
        INSERT INTO versions_fts (versions_fts, rowid, title, summary_text, content_text)
        VALUES ('delete', old.id, old.title, old.summary_text, old.content_text);
    END
    """,
    """
    CREATE TRIGGER versions_fts_update AFTER UPDATE ON versions BEGIN
        INSERT INTO versions_fts (versions_fts, rowid, title, summary_text, content_text)
        VALUES ('delete', old.id, old.title, old.summary_text, old.content_text);
        INSERT INTO versions_fts (rowid, title, summary_text, content_text)
        VALUES (new.id, new.title, new.summary_text, new.content_text);
    END
    """,
    # Backfill: index the versions written before this migration.
    "INSERT INTO versions_fts (versions_fts) VALUES ('rebuild')",
    """
    CREATE VIEW change_log AS
    SELECT
        c.id AS change_id,
        c.detected_at,
        s.name AS source,
        c.kind,
        c.fields,
        c.edit,
        e.id AS entry_id,
        e.key AS entry_key,
        COALESCE(nv.link, ov.link, e.url) AS url,
        e.title AS current_title,
        ov.title AS title_before,
        nv.title AS title_after,
        ov.version AS version_before,
        nv.version AS version_after,
        c.old_version_id,
        c.new_version_id
    FROM changes c
    JOIN entries e ON e.id = c.entry_id
    JOIN sources s ON s.id = c.source_id
    LEFT JOIN versions ov ON ov.id = c.old_version_id
    LEFT JOIN versions nv ON nv.id = c.new_version_id
    """,
    """
    CREATE VIEW headline_history AS
    SELECT
        source, entry_id, entry_key, url, version, headline,
        seen_at AS since,
        LEAD(seen_at) OVER (PARTITION BY entry_id ORDER BY version) AS until
    FROM (
        SELECT
            s.name AS source,
            e.id AS entry_id,
            e.key AS entry_key,
            e.url,
            v.version,
            v.title AS headline,
            v.seen_at,
            LAG(v.title) OVER (PARTITION BY v.entry_id ORDER BY v.version) AS previous
        FROM versions v
        JOIN entries e ON e.id = v.entry_id
        JOIN sources s ON s.id = e.source_id
    )
    WHERE previous IS NULL OR previous IS NOT headline
    """,
]


@migrations(name="0003_search_and_views")
def _search_and_views(db: Database) -> None:
    for statement in _SEARCH_AND_VIEWS:
        db.execute(statement)


_FOLLOWED = [
    """
    CREATE TABLE followed_articles (
        id INTEGER PRIMARY KEY,
        feed_source_id INTEGER NOT NULL REFERENCES sources(id),
        article_source_id INTEGER NOT NULL REFERENCES sources(id),
        url TEXT NOT NULL,
        first_seen_at TEXT NOT NULL,
        last_checked_at TEXT,
        last_changed_at TEXT,
        next_check_at TEXT,
        etag TEXT,
        last_modified TEXT,
        body_sha256 TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        UNIQUE (feed_source_id, url)
    )
    """,
    "CREATE INDEX idx_followed_due ON followed_articles (feed_source_id, next_check_at)",
]


@migrations(name="0005_followed_articles")
def _followed_articles(db: Database) -> None:
    """Articles linked from ``follow_links`` feeds and when to re-check each."""
    for statement in _FOLLOWED:
        db.execute(statement)


_FETCH_TIMING = [
    # time spent waiting for a concurrency slot before the request started
    # (duration_ms is the request's own time), and time spent parsing and normalising
    # the body; NULL where not measured (older rows, or no body was parsed)
    "ALTER TABLE fetches ADD COLUMN queued_ms INTEGER",
    "ALTER TABLE fetches ADD COLUMN parse_ms INTEGER",
]


@migrations(name="0006_fetch_timing")
def _fetch_timing(db: Database) -> None:
    """``fetches.queued_ms`` and ``fetches.parse_ms``: where a poll's time went."""
    for statement in _FETCH_TIMING:
        db.execute(statement)


_STORY_KEYS = [
    # every key an entry has had within its source: the current one (replaced_at NULL)
    # and the ones a rekey replaced, so a story is found by an old key or URL
    """
    CREATE TABLE entry_keys (
        id INTEGER PRIMARY KEY,
        entry_id INTEGER NOT NULL REFERENCES entries(id),
        source_id INTEGER NOT NULL REFERENCES sources(id),
        key TEXT NOT NULL,
        url TEXT,
        first_seen_at TEXT NOT NULL,
        replaced_at TEXT,
        UNIQUE (source_id, key)
    )
    """,
    "CREATE INDEX idx_entry_keys_entry ON entry_keys (entry_id)",
    "CREATE INDEX idx_entry_keys_key ON entry_keys (key)",
    "CREATE INDEX idx_entry_keys_url ON entry_keys (url)",
    "INSERT INTO entry_keys (entry_id, source_id, key, url, first_seen_at)"
    " SELECT id, source_id, key, url, first_seen_at FROM entries ORDER BY id",
    # changes.kind gains 'moved' (a CHECK constraint is only changed by rebuilding the
    # table: SQLite's documented new table, copy, drop, rename), plus the keys of a move
    "DROP VIEW change_log",
    "DROP VIEW headline_history",
    """
    CREATE TABLE changes_new (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        entry_id INTEGER NOT NULL REFERENCES entries(id),
        kind TEXT NOT NULL
            CHECK (kind IN ('new', 'changed', 'removed', 'restored', 'moved')),
        fields TEXT NOT NULL DEFAULT '[]',
        edit TEXT,
        old_version_id INTEGER REFERENCES versions(id),
        new_version_id INTEGER REFERENCES versions(id),
        detected_at TEXT NOT NULL,
        fetch_id INTEGER REFERENCES fetches(id),
        old_key TEXT,
        new_key TEXT
    )
    """,
    "INSERT INTO changes_new (id, source_id, entry_id, kind, fields, edit, old_version_id,"
    " new_version_id, detected_at, fetch_id) SELECT id, source_id, entry_id, kind, fields,"
    " edit, old_version_id, new_version_id, detected_at, fetch_id FROM changes ORDER BY id",
    "DROP TABLE changes",
    "ALTER TABLE changes_new RENAME TO changes",
    "CREATE INDEX idx_changes_detected ON changes (detected_at)",
    "CREATE INDEX idx_changes_entry ON changes (entry_id, detected_at)",
    "CREATE INDEX idx_changes_source ON changes (source_id, detected_at)",
    # the views exactly as 0003 made them
    *[s for s in _SEARCH_AND_VIEWS if s.strip().startswith("CREATE VIEW")],
]


@migrations(name="0007_story_keys", transactional=False)
def _story_keys(db: Database) -> None:
    """``entry_keys``, and ``changes`` rebuilt for ``kind = 'moved'`` with ``old_key``/``new_key``.

    Foreign keys must be off while ``changes`` is replaced (``outbox`` refers to it),
    and that pragma does nothing inside a transaction: so this migration runs its own
    transaction, checks the foreign keys before committing, and is a no-op if a crash
    came after its commit but before sqlite-utils recorded it.
    """
    if db["entry_keys"].exists():
        return
    enforced = db.execute("PRAGMA foreign_keys").fetchone()[0]
    db.execute("PRAGMA foreign_keys = OFF")
    try:
        with db.atomic():
            for statement in _STORY_KEYS:
                db.execute(statement)
            broken = db.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise sqlite3.IntegrityError(f"foreign keys broken by 0007_story_keys: {broken}")
    finally:
        if enforced:
            db.execute("PRAGMA foreign_keys = ON")


_READ_INDEXES = [
    # `history`/`diff` ENTRY and the README's SQL find an entry by its key or URL
    # (without these, each lookup scanned every entry: ~500,000 at 1,000,000 versions)
    "CREATE INDEX IF NOT EXISTS idx_entries_key ON entries (key)",
    "CREATE INDEX IF NOT EXISTS idx_entries_url ON entries (url)",
    # `sources` counts each source's entries and versions from this index alone, and the
    # README's "stories edited most often" reads the top of the next one
    "CREATE INDEX IF NOT EXISTS idx_entries_source_versions ON entries (source_id, version_count)",
    "CREATE INDEX IF NOT EXISTS idx_entries_versions ON entries (version_count)",
    # entries that disappeared, latest first: holds only the removed ones
    "CREATE INDEX IF NOT EXISTS idx_entries_removed ON entries (removed_at)"
    " WHERE removed_at IS NOT NULL",
    # stories that moved to a new key (few among all changes)
    "CREATE INDEX IF NOT EXISTS idx_changes_moved ON changes (detected_at) WHERE kind = 'moved'",
    # idx_changes_detected also carries source_id and kind, so a time window's changes
    # are counted by source and kind from the index alone
    "DROP INDEX IF EXISTS idx_changes_detected",
    "CREATE INDEX idx_changes_detected ON changes (detected_at, source_id, kind)",
    # headline_history, same columns and rows: its windows are partitioned by the entry's
    # id and the columns that follow from it, so SQLite moves a filter on entry_id,
    # entry_key, source or url inside them (before, every version was read first)
    "DROP VIEW IF EXISTS headline_history",
    """
    CREATE VIEW headline_history AS
    SELECT
        source, entry_id, entry_key, url, version, headline,
        seen_at AS since,
        LEAD(seen_at) OVER (
            PARTITION BY entry_id, entry_key, source, url ORDER BY version
        ) AS until
    FROM (
        SELECT
            s.name AS source,
            e.id AS entry_id,
            e.key AS entry_key,
            e.url,
            v.version,
            v.title AS headline,
            v.seen_at,
            LAG(v.title) OVER (
                PARTITION BY e.id, e.key, s.name, e.url ORDER BY v.version
            ) AS previous
        FROM versions v
        JOIN entries e ON e.id = v.entry_id
        JOIN sources s ON s.id = e.source_id
    )
    WHERE previous IS NULL OR previous IS NOT headline
    """,
]


@migrations(name="0008_read_indexes")
def _read_indexes(db: Database) -> None:
    """Indexes and a view shape for reading a large history (1,000,000 versions)."""
    for statement in _READ_INDEXES:
        db.execute(statement)


_STORAGE_BUDGET = [
    # No query reads outbox by created_at; retention looks for events whose payload is
    # not pruned yet by age, and this index holds only those (a few days of events).
    "DROP INDEX IF EXISTS idx_outbox_created",
    "CREATE INDEX IF NOT EXISTS idx_outbox_unpruned ON outbox (created_at) WHERE payload <> ''",
    # Every read of an entry's versions uses UNIQUE (entry_id, version) instead.
    "DROP INDEX IF EXISTS idx_versions_entry",
    # Deleting an old fetches row checks its foreign keys: without these, each deleted
    # row read every row of versions and of changes.
    "CREATE INDEX IF NOT EXISTS idx_versions_fetch ON versions (fetch_id)",
    "CREATE INDEX IF NOT EXISTS idx_changes_fetch ON changes (fetch_id)",
    # Retention finds an event's deliveries, and deletes outbox rows (to write them again
    # without their payload), through this: the foreign-key check of each deleted row too.
    "CREATE INDEX IF NOT EXISTS idx_deliveries_outbox ON deliveries (outbox_id)",
    # The full-text index follows the columns it indexes only (it re-indexed a version
    # on any update before).
    "DROP TRIGGER IF EXISTS versions_fts_update",
    """
    CREATE TRIGGER versions_fts_update AFTER UPDATE OF title, summary_text, content_text
    ON versions BEGIN
        INSERT INTO versions_fts (versions_fts, rowid, title, summary_text, content_text)
        VALUES ('delete', old.id, old.title, old.summary_text, old.content_text);
        INSERT INTO versions_fts (rowid, title, summary_text, content_text)
        VALUES (new.id, new.title, new.summary_text, new.content_text);
    END
    """,
    # A summary identical to the content is stored once: summary is NULL (feedparser
    # copies the content into the summary of an item that has none).
    "UPDATE versions SET summary = NULL WHERE summary = content AND content <> ''",
]


@migrations(name="0009_storage_budget")
def _storage_budget(db: Database) -> None:
    """Indexes for retention, none that no query uses, and no summary equal to its content."""
    for statement in _STORAGE_BUDGET:
        db.execute(statement)


def _register_shared() -> None:
    """The migrations both backends share, applied to SQLite under the same names."""
    for migration in SHARED:

        def apply(db: Database, migration: Any = migration) -> None:
            migration.apply(SQLiteDatabase(db.conn, "", readonly=False))

        apply.__doc__ = f"{migration.name} (shared with PostgreSQL: schema_shared.py)."
        migrations(name=migration.name)(apply)


_register_shared()
