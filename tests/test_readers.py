"""Readers query the database continuously while polls write: nobody sees "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sqlite_utils import Database

from tests import story
from tests.conftest import Harness

QUERIES = [
    "SELECT count(*) FROM versions",
    "SELECT s.name, count(c.id) FROM sources s LEFT JOIN changes c ON c.source_id = s.id"
    " GROUP BY s.id",
    "SELECT e.key, v.title FROM entries e JOIN versions v ON v.id = e.current_version_id",
    "SELECT * FROM fetches ORDER BY id DESC LIMIT 20",
]


def read_continuously(db: Path, stop: threading.Event, errors: list[str], counts: list[int],
                      use_sqlite_utils: bool) -> None:  # fmt: skip
    """Run QUERIES in a loop on a fresh read-only connection each round, as a user would."""
    while not stop.is_set():
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
            if use_sqlite_utils:
                dbu = Database(conn)
                for sql in QUERIES:
                    list(dbu.query(sql))
            else:
                for sql in QUERIES:
                    conn.execute(sql).fetchall()
            conn.close()
            counts.append(1)
        except sqlite3.OperationalError as exc:
            errors.append(str(exc))


def test_readers_and_the_writer_never_see_database_is_locked(harness: Harness) -> None:
    """sqlite3 and sqlite-utils readers run non-stop during polls; no lock errors either side."""
    for i in range(8):
        harness.add(f"s{i}", f"/feed{i}.xml")
        harness.server.serve(f"/feed{i}.xml", story.rss(0))
    harness.poll()  # creates the database
    stop, errors, counts = threading.Event(), [], []
    readers = [
        threading.Thread(
            target=read_continuously, args=(harness.db_path, stop, errors, counts, flag)
        )
        for flag in (False, True, False)
    ]
    for reader in readers:
        reader.start()
    try:
        for round_ in range(12):
            for i in range(8):
                harness.server.serve(f"/feed{i}.xml", story.rss((round_ + i) % 5))
            results = harness.poll()
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []
    assert len(counts) > 20
