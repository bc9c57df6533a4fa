"""`aggregator backup FILE` against a running daemon that keeps writing."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aggregator.cli import main
from tests.conftest import Harness
from tests.test_service import FAST, start, stop, wait_for


def feed(n: int) -> str:
    """A live feed at step ``n``: a new story on top, and each listed story's summary edited."""
    items = "".join(
        f"<item><guid>story-{i}</guid><title>Story {i}</title>"
        f"<description>Update {n} on story {i}.</description></item>"
        for i in range(n, max(-1, n - 20), -1)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Live</title>'
        f"{items}</channel></rss>"
    )


@pytest.fixture(name="changing")
def _changing(harness: Harness) -> Iterator[None]:
    """The feed changes every 0.1 s for as long as the test runs."""
    done = threading.Event()

    def publish() -> None:
        n = 0
        while not done.wait(0.1):
            n += 1
            harness.server.serve("/live.xml", feed(n))

    harness.server.serve("/live.xml", feed(0))
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join()


def versions(db: Path) -> set[int]:
    """Ids of the versions in the daemon's database (none before it has set it up)."""
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM versions")}
    except sqlite3.OperationalError:  # not migrated yet
        return set()
    finally:
        conn.close()


def backup(db: Path, target: Path, *extra: str) -> Result:
    """``aggregator backup TARGET --db DB`` (in this process; the daemon is another one)."""
    return CliRunner().invoke(main, ["backup", str(target), "--db", str(db), *extra])


def copied_versions(path: Path) -> tuple[set[int], int]:
    """The versions in a backup and how many the search index finds, after checking it."""
    copy = sqlite3.connect(path)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA foreign_key_check").fetchall() == []
        ids = {row[0] for row in copy.execute("SELECT id FROM versions")}
        hits = copy.execute(
            "SELECT count(*) FROM versions_fts WHERE versions_fts MATCH 'story'"
        ).fetchone()[0]
    finally:
        copy.close()
    return ids, hits


def test_backup_of_a_running_daemon_is_consistent_and_complete(
    harness: Harness, changing: None, tmp_path: Path
) -> None:
    """While the daemon stores new versions every poll: the copy checks ok and holds every
    version written before the backup started; an existing file is kept without --force."""
    harness.extra = FAST
    harness.add("live", "/live.xml", interval="0.3s")
    proc = start(harness)
    target = tmp_path / "backup.db"
    try:
        wait_for(lambda: len(versions(harness.db_path)) >= 20, 30)
        before = versions(harness.db_path)
        done = backup(harness.db_path, target)
        first = target.read_bytes()
        wait_for(lambda: len(versions(harness.db_path)) > len(before) + 10, 30)
        again = backup(harness.db_path, target)
        kept = target.read_bytes() == first
        later = versions(harness.db_path)
        forced = backup(harness.db_path, target, "--force")
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert done.exit_code == 0, done.output
    assert f"backed up {harness.db_path} to {target}: " in done.output
    assert "(quick_check: ok)" in done.output
    assert again.exit_code == 1
    assert "exists" in again.output and "--force" in again.output
    assert kept
    assert forced.exit_code == 0, forced.output
    copied, hits = copied_versions(target)
    assert before < later <= copied  # every version written before the (forced) backup
    assert hits == len(copied)  # the search index came along, in step with versions
    assert not list(tmp_path.glob(".*partial"))
