"""The fetches log is bounded by ``[storage] keep_fetches``."""

from __future__ import annotations

from aggregator.timeutil import ago
from tests import story
from tests.conftest import Harness

#: Every test here runs on SQLite and on a real PostgreSQL server.
BACKENDS = ("sqlite", "postgresql")


def test_poll_prunes_old_unreferenced_fetches_and_keeps_referenced_ones(harness: Harness) -> None:
    """Old fetch rows go after a poll, except those a version or change points at."""
    harness.extra = 'keep_fetches = "30d"\n'  # lands in [storage]
    harness.add("world", "/feed.xml")
    harness.server.serve("/feed.xml", story.rss(0))
    for _ in range(4):  # one changed fetch, then three 304s
        harness.poll()
    harness.execute("UPDATE fetches SET started_at = ?", (ago(100 * 86400),))
    harness.poll()
    rows = harness.rows(
        "SELECT id, outcome, started_at > ? AS fresh FROM fetches ORDER BY id", (ago(86400),)
    )
    assert [(r["outcome"], bool(r["fresh"])) for r in rows] == [
        ("changed", False),
        ("not_modified", True),
    ]
    referenced = harness.rows("SELECT DISTINCT fetch_id FROM versions")
    assert referenced == [{"fetch_id": rows[0]["id"]}]
    if not harness.on_postgres:  # PostgreSQL checks every foreign key as it writes
        assert harness.rows("PRAGMA foreign_key_check") == []


def test_recent_fetches_are_kept(harness: Harness) -> None:
    """Fetch rows younger than keep_fetches are never pruned."""
    harness.add("world", "/feed.xml")
    harness.server.serve("/feed.xml", story.rss(0))
    for _ in range(3):
        harness.poll()
    assert len(harness.rows("SELECT id FROM fetches")) == 3
