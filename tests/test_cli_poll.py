"""`aggregator poll` as a user runs it: a subprocess against the local server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests import story
from tests.conftest import write_config
from tests.server import TestServer
from tests.test_config import run_cli


def test_poll_exits_zero_when_some_sources_fail_and_logs_json(
    tmp_path: Path, server: TestServer
) -> None:
    """A pass with a failing source still exits 0; each log line is JSON naming its source."""
    server.serve("/feed.xml", story.rss(0))
    write_config(
        tmp_path / "aggregator.toml",
        [
            {"name": "world", "url": server.url("/feed.xml")},
            {"name": "broken", "url": server.url("/missing.xml")},
        ],
        db=tmp_path / "a.db",
    )
    proc = run_cli("poll", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 sources polled, 1 failed, 3 new" in proc.stdout
    assert "failed: broken: HTTP 404" in proc.stdout
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    by_source = {
        line.get("source"): line for line in lines if line.get("event", "").startswith("poll.")
    }
    assert by_source["world"]["event"] == "poll.done" and by_source["world"]["new"] == 3
    assert by_source["broken"]["event"] == "poll.failed" and by_source["broken"]["status"] == 404
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM versions").fetchone()[0] == 3


def test_poll_only_named_sources(tmp_path: Path, server: TestServer) -> None:
    """--source limits the pass to the named sources."""
    server.serve("/feed.xml", story.rss(0))
    write_config(
        tmp_path / "aggregator.toml",
        [
            {"name": "world", "url": server.url("/feed.xml")},
            {"name": "other", "url": server.url("/feed.xml")},
        ],
        db=tmp_path / "a.db",
    )
    proc = run_cli("poll", "--source", "other", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1 source polled")
    assert len(server.hits("/feed.xml")) == 1
