"""The fetches log is bounded by ``[storage] keep_fetches``."""

from __future__ import annotations

import sqlite3

from tests import story
from tests.conftest import Harness


def test_poll_prunes_old_unreferenced_fetches_and_keeps_referenced_ones(harness: Harness) -> None:
    """Old fetch rows go after a poll, except those a version or change points at."""
    harness.extra = 'keep_fetches = "30d"\n'  # lands in [storage]
    harness.add("world", "/feed.xml")
    harness.server.serve("/feed.xml", story.rss(0))
    for _ in range(4):  # one changed fetch, then three 304s
        harness.poll()
    conn = sqlite3.connect(harness.db_path)
    with conn:
        conn.execute("UPDATE fetches SET started_at = datetime('now', '-100 days')")
    conn.close()
    harness.poll()
    rows = harness.rows(
        "SELECT id, outcome, started_at > datetime('now', '-1 day') AS fresh FROM fetches"
    )
    assert [(r["outcome"], r["fresh"]) for r in rows] == [("changed", 0), ("not_modified", 1)]
    referenced = harness.rows("SELECT DISTINCT fetch_id FROM versions")
    assert referenced == [{"fetch_id": rows[0]["id"]}]
    assert harness.rows("PRAGMA foreign_key_check") == []


def test_recent_fetches_are_kept(harness: Harness) -> None:
    """Fetch rows younger than keep_fetches are never pruned."""
    harness.add("world", "/feed.xml")
    harness.server.serve("/feed.xml", story.rss(0))
    for _ in range(3):
        harness.poll()
    assert len(harness.rows("SELECT id FROM fetches")) == 3
