"""`aggregator demo` end to end: offline, no config, a short cycle."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_demo_runs_the_story_and_prints_changes_digest_and_next_steps(tmp_path: Path) -> None:
    """The demo prints each kind of change as detected, the digest, and commands to try."""
    db = tmp_path / "demo.db"
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", "demo", "--delay", "0", "--db", str(db)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Poll 4/4" in out
    assert "changed title (v1 → v2)" in out and "appended" in out and "removed" in out
    assert "{+The first twelve trucks crossed after 18:00.+}" in out  # appended text, in the digest
    assert f"aggregator history summit --db {db}" in out
    conn = sqlite3.connect(db)
    try:
        kinds = dict(conn.execute("SELECT kind, count(*) FROM changes GROUP BY kind").fetchall())
        titles = conn.execute("SELECT count(*) FROM headline_history WHERE entry_key = 'summit'")
        assert titles.fetchone()[0] == 3
    finally:
        conn.close()
    assert kinds["new"] >= 5 and kinds["changed"] >= 5 and kinds["removed"] >= 1


def test_demo_refuses_to_reuse_a_database(tmp_path: Path) -> None:
    """An existing --db is not overwritten or mixed with the demo story."""
    from click.testing import CliRunner

    from aggregator.cli import main

    existing = tmp_path / "mine.db"
    existing.write_text("precious")
    result = CliRunner().invoke(main, ["demo", "--db", str(existing)])
    assert result.exit_code == 1 and "already exists" in result.output
    assert existing.read_text() == "precious"
