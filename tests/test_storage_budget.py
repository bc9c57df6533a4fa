"""The storage budget: delivered events are pruned after ``keep_events`` (undelivered never),
and migration 0009 turns a database of the previous schema, with data in it, into the new one
with the same answers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from aggregator import config as config_mod
from aggregator import housekeeping
from aggregator.scheduler import Daemon
from aggregator.store import Store
from aggregator.store.schema import migrations
from tests import story
from tests.conftest import Harness
from tests.receivers import WebhookReceiver


def _sinks(tmp: Path, hook: str) -> str:
    """[storage] keep_events, then three sinks: all events; source b only, to a dead
    webhook; source c only, batched (a story's changes within an hour fold into one)."""
    return (
        'keep_events = "3d"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "log"\npath = "{tmp / "events.jsonl"}"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "webhook"\nname = "down"\nurl = "{hook}"\nsources = ["b"]\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "batched"\npath = "{tmp / "batched.jsonl"}"\n'
        'sources = ["c"]\nbatch = "1h"\n'
    )


def _events(harness: Harness) -> dict[str, list[dict[str, object]]]:
    """Per source: each event's id, whether its payload is kept, and its deliveries."""
    rows = harness.rows(
        "SELECT s.name AS source, o.id, o.event_id, o.payload <> '' AS kept,"
        " (SELECT count(*) FROM deliveries d WHERE d.outbox_id = o.id) AS deliveries"
        " FROM outbox o JOIN sources s ON s.id = o.source_id ORDER BY o.id"
    )
    out: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        out.setdefault(str(row.pop("source")), []).append(row)
    return out


def test_delivered_events_are_pruned_after_keep_events_and_waiting_ones_never(
    harness: Harness, tmp_path: Path
) -> None:
    """Old delivered events lose payload, deliveries and attempts; waiting ones keep all."""
    hook = WebhookReceiver()
    hook.default_status = 503  # the "down" sink retries: its deliveries stay pending
    try:
        harness.extra = _sinks(tmp_path, hook.url())
        for name in ("a", "b", "c"):
            harness.add(name, f"/{name}.xml")
            harness.server.serve(f"/{name}.xml", story.rss(0))
        harness.poll()
        harness.server.serve("/c.xml", story.rss(1))  # c's stories change: events fold
        harness.poll("c")
    finally:
        hook.stop()
    before = _events(harness)
    assert {k: len(v) for k, v in before.items()} == {"a": 3, "b": 3, "c": 3 + 3}
    folded = harness.rows("SELECT folded FROM deliveries WHERE folded <> '[]'")
    assert folded, "the second poll of c folded its changes into pending deliveries"
    conn = sqlite3.connect(harness.db_path)
    with conn:  # everything so far happened ten days ago
        conn.execute("UPDATE outbox SET created_at = datetime('now', '-10 days')")
    conn.close()

    harness.server.serve("/a.xml", story.rss(1))
    harness.poll("a")  # a new event for a; the pass ends with retention

    after = _events(harness)
    assert [e["kept"] for e in after["a"]] == [0, 0, 0] + [1] * 3  # old ones pruned, new kept
    assert [e["deliveries"] for e in after["a"]] == [0, 0, 0] + [1] * 3
    assert [e["event_id"] for e in after["a"][:3]] == [e["event_id"] for e in before["a"]]
    assert after["b"] == before["b"]  # pending at "down": payload and deliveries kept
    assert all(e["kept"] for e in after["c"])  # own or folded into a pending batch
    assert after["c"] == before["c"]
    attempts = harness.rows(
        "SELECT count(*) AS n FROM delivery_attempts WHERE delivery_id NOT IN"
        " (SELECT id FROM deliveries)"
    )
    assert attempts == [{"n": 0}]
    assert harness.rows("PRAGMA foreign_key_check") == []


def test_events_a_paused_sink_has_not_seen_are_kept(harness: Harness, tmp_path: Path) -> None:
    """A sink with enabled = false holds its events back from pruning (they wait for it)."""
    harness.extra = (
        'keep_events = "1d"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "log"\npath = "{tmp_path / "log.jsonl"}"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "later"\npath = "{tmp_path / "later.jsonl"}"\n'
    )
    harness.add("a", "/a.xml")
    harness.server.serve("/a.xml", story.rss(0))
    harness.poll()  # both sinks registered, nothing delivered yet to either... then
    harness.extra = harness.extra.replace('name = "later"\n', 'name = "later"\nenabled = false\n')
    harness.server.serve("/a.xml", story.rss(1))
    harness.poll()  # "later" is paused: this poll's events wait for it
    conn = sqlite3.connect(harness.db_path)
    with conn:
        conn.execute("UPDATE outbox SET created_at = datetime('now', '-10 days')")
    conn.close()
    harness.poll()
    kept = harness.rows("SELECT payload <> '' AS kept FROM outbox ORDER BY id")
    assert [r["kept"] for r in kept] == [0] * 3 + [1] * 3


# -- migration 0009 from the previous schema, with data ----------------------------------

_OLD_ROWS = [
    "INSERT INTO sources (id, name, kind, url, config_url, added_at)"
    " VALUES (1, 'world', 'feed', 'http://x/f', 'http://x/f', '2026-03-10 08:00:00.000')",
    "INSERT INTO fetches (id, source_id, started_at, url, outcome, changes)"
    " VALUES (1, 1, '2026-03-10 08:00:00.000', 'http://x/f', 'changed', 2),"
    " (2, 1, '2026-03-10 09:00:00.000', 'http://x/f', 'changed', 1),"
    " (3, 1, '2026-03-10 09:30:00.000', 'http://x/f', 'not_modified', 0)",
    "INSERT INTO entries (id, source_id, key, url, title, first_seen_at, last_seen_at,"
    " version_count, current_version_id) VALUES"
    " (1, 1, 'talks', 'http://x/talks', 'Talks end', '2026-03-10 08:00:00.000',"
    " '2026-03-10 09:00:00.000', 2, 2),"
    " (2, 1, 'port', 'http://x/port', 'Port reopens', '2026-03-10 08:00:00.000',"
    " '2026-03-10 09:00:00.000', 1, 3)",
    # an Atom-like story: no summary of its own, so feedparser copied the content into it
    "INSERT INTO versions (id, entry_id, version, title, link, summary, content, summary_text,"
    " content_text, content_hash, seen_at, fetch_id) VALUES"
    " (1, 1, 1, 'Talks begin', 'http://x/talks', '<p>Ministers met in Antalya.</p>',"
    " '<p>Ministers met in Antalya.</p>', '', 'Ministers met in Antalya.', 'h1',"
    " '2026-03-10 08:00:00.000', 1),"
    " (2, 1, 2, 'Talks end', 'http://x/talks', '<p>Ministers met in Antalya. No deal.</p>',"
    " '<p>Ministers met in Antalya. No deal.</p>', '', 'Ministers met in Antalya. No deal.',"
    " 'h2', '2026-03-10 09:00:00.000', 2),"
    " (3, 2, 1, 'Port reopens', 'http://x/port', '<p>Ships sail again.</p>', '',"
    " 'Ships sail again.', '', 'h3', '2026-03-10 08:00:00.000', 1)",
    "INSERT INTO changes (id, source_id, entry_id, kind, fields, old_version_id, new_version_id,"
    " detected_at, fetch_id) VALUES"
    " (1, 1, 1, 'new', '[]', NULL, 1, '2026-03-10 08:00:00.000', 1),"
    " (2, 1, 2, 'new', '[]', NULL, 3, '2026-03-10 08:00:00.000', 1),"
    " (3, 1, 1, 'changed', '[\"title\", \"content\"]', 1, 2, '2026-03-10 09:00:00.000', 2)",
    "INSERT INTO outbox (id, event_id, type, source_id, entry_id, change_id, payload, created_at)"
    " VALUES (1, 'e1', 'change', 1, 1, 1, '{\"id\": \"e1\"}', '2026-03-10 08:00:00.000'),"
    " (2, 'e2', 'change', 1, 2, 2, '{\"id\": \"e2\"}', '2026-03-10 08:00:00.000'),"
    " (3, 'e3', 'change', 1, 1, 3, '{\"id\": \"e3\"}', '2026-03-10 09:00:00.000')",
    "INSERT INTO sinks (id, name, kind, added_at, cursor)"
    " VALUES (1, 'log', 'jsonl', '2026-03-10 07:00:00.000', 3)",
    "INSERT INTO deliveries (id, sink_id, outbox_id, status, attempts, due_at, created_at,"
    " updated_at) VALUES"
    " (1, 1, 1, 'delivered', 1, '2026-03-10 08:00:00.000', '2026-03-10 08:00:00.000',"
    " '2026-03-10 08:00:00.000'),"
    " (2, 1, 2, 'delivered', 1, '2026-03-10 08:00:00.000', '2026-03-10 08:00:00.000',"
    " '2026-03-10 08:00:00.000'),"
    " (3, 1, 3, 'failed', 1, '2026-03-10 09:00:00.000', '2026-03-10 09:00:00.000',"
    " '2026-03-10 09:00:00.000')",
    "INSERT INTO delivery_attempts (delivery_id, sink_id, at, status)"
    " VALUES (1, 1, '2026-03-10 08:00:00.000', 'delivered'),"
    " (2, 1, '2026-03-10 08:00:00.000', 'delivered'), (3, 1, '2026-03-10 09:00:00.000', 'failed')",
]

#: What a user asks of the history, answered before and after the migration.
_QUESTIONS = [
    "SELECT * FROM change_log ORDER BY change_id",
    "SELECT * FROM headline_history ORDER BY entry_id, version",
    "SELECT rowid, snippet(versions_fts, -1, '[', ']', '…', 8) FROM versions_fts"
    " WHERE versions_fts MATCH 'antalya' ORDER BY rowid",
    "SELECT v.id FROM versions_fts JOIN versions v ON v.id = versions_fts.rowid"
    " WHERE versions_fts MATCH 'ships OR deal' ORDER BY v.id",
    "SELECT id, content, summary_text, content_text FROM versions ORDER BY id",
    "SELECT id, event_id, type, source_id, entry_id, change_id, payload, created_at"
    " FROM outbox ORDER BY id",
]


def _answers(db: Database) -> list[list[tuple[object, ...]]]:
    return [list(db.execute(q).fetchall()) for q in _QUESTIONS]


def test_migration_0009_keeps_every_answer_and_stores_a_copied_summary_once(
    tmp_path: Path,
) -> None:
    """From the previous schema with data: same views, search and rows; no duplicate text."""
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path))
    migrations.apply(db, stop_before="0009_storage_budget")
    with db.atomic():
        for statement in _OLD_ROWS:
            db.execute(statement)
    before = _answers(db)
    db.close()

    store = Store.open(path)
    try:
        after = _answers(store.db)
        assert after == before
        summaries = store.db.execute("SELECT id, summary FROM versions ORDER BY id").fetchall()
        assert summaries == [(1, None), (2, None), (3, "<p>Ships sail again.</p>")]
        indexes = {
            r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {
            "idx_versions_fetch",
            "idx_changes_fetch",
            "idx_outbox_unpruned",
            "idx_deliveries_outbox",
        } <= indexes
        assert not {"idx_versions_entry", "idx_outbox_created"} & indexes
        assert store.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        store.db.execute(
            "INSERT INTO versions_fts (versions_fts, rank) VALUES ('integrity-check', 1)"
        )
        # an update of a column the index does not hold leaves it alone; a title edit is found
        store.db.execute("UPDATE versions SET title = 'Talks collapse' WHERE id = 2")
        hits = store.db.execute(
            "SELECT rowid FROM versions_fts WHERE versions_fts MATCH 'collapse'"
        ).fetchall()
        assert hits == [(2,)]
    finally:
        store.close()


def test_migrated_database_prunes_as_the_daemon_would(tmp_path: Path) -> None:
    """After 0009, retention empties old delivered payloads, keeps the failed one, and drops
    the fetch row that brought no change."""
    from aggregator.config.models import StorageConfig
    from aggregator.store.retention import prune

    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path))
    migrations.apply(db, stop_before="0009_storage_budget")
    with db.atomic():
        for statement in _OLD_ROWS:
            db.execute(statement)
    db.close()
    store = Store.open(path)
    try:
        removed = prune(store.db, StorageConfig(database=str(path), keep_fetches=86400))
        assert removed == {"fetches": 1, "events": 2, "deliveries": 2, "delivery_attempts": 2}
        rows = store.db.execute("SELECT event_id, payload FROM outbox ORDER BY id").fetchall()
        assert rows == [("e1", ""), ("e2", ""), ("e3", json.dumps({"id": "e3"}))]
        assert store.db.execute("SELECT id FROM fetches ORDER BY id").fetchall() == [(1,), (2,)]
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        store.close()


def test_the_daemon_prunes_delivered_events_in_its_housekeeping(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's retention pass empties old delivered payloads (not only fetch rows)."""
    monkeypatch.setattr(housekeeping, "RETENTION_FIRST", 0.05)
    harness.extra = (
        'keep_events = "1d"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "log"\npath = "{tmp_path / "log.jsonl"}"\n'
        '[schedule]\nstartup_spread = "1h"\n'
    )
    harness.add("world", "/feed.xml", interval="1h")
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()  # three events, delivered to the jsonl sink
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("UPDATE outbox SET created_at = datetime('now', '-2 days')")
    config = config_mod.load(harness.config_path)

    def pruned() -> list[int]:
        return [r["gone"] for r in harness.rows("SELECT payload = '' AS gone FROM outbox")]

    async def main() -> None:
        daemon = Daemon(config, handle_signals=False)
        task = asyncio.create_task(daemon.run())
        for _ in range(200):
            await asyncio.sleep(0.05)
            if pruned() == [1, 1, 1]:
                break
        daemon.stop()
        await task

    asyncio.run(main())
    assert pruned() == [1, 1, 1]
    assert harness.rows("SELECT count(*) AS n FROM deliveries") == [{"n": 0}]
