"""The large-history generator writes what the pipeline would, and the reads use indexes.

``benchmarks/bigdb.py`` builds the 1,000,000-version database the read benchmark times; here
it builds 2,000 versions, which the reading commands must read correctly, and the query
plan of every statement those commands run must search an index, never scan ``versions``,
``changes``, ``entries`` or ``fetches`` (a scan that takes a millisecond here takes seconds
at a million versions).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import main as cli
from aggregator.store.queries import Reader
from aggregator.timeutil import ago, now_db

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bigdb

#: Tables (and the aliases the queries give them) that must never be scanned whole.
BIG = {"versions", "v", "ov", "nv", "changes", "c", "entries", "e", "fetches", "f"}
#: The one whole pass allowed: `sources` counts every source's entries and versions from
#: this small index (a few bytes per entry), not from the tables.
ALLOWED_SCAN = "USING COVERING INDEX idx_entries_source_versions"

#: Each must hold for every row of a database the pipeline wrote.
CONSISTENCY = {
    "version_count is the number of versions, numbered 1..n": """
        SELECT count(*) FROM entries e WHERE version_count <> (
            SELECT count(*) FROM versions v WHERE v.entry_id = e.id)
        OR version_count <> (SELECT max(version) FROM versions v WHERE v.entry_id = e.id)""",
    "current_version_id is the latest version": """
        SELECT count(*) FROM entries e WHERE current_version_id IS NOT (
            SELECT id FROM versions v WHERE v.entry_id = e.id ORDER BY version DESC LIMIT 1)""",
    "entries.title is the current version's": """
        SELECT count(*) FROM entries e JOIN versions v ON v.id = e.current_version_id
        WHERE e.title IS NOT v.title OR e.url IS NOT v.link""",
    "an entry's first change is 'new' of version 1": """
        SELECT count(*) FROM entries e JOIN changes c ON c.id = (
            SELECT min(id) FROM changes WHERE entry_id = e.id)
        LEFT JOIN versions v ON v.id = c.new_version_id
        WHERE c.kind <> 'new' OR c.old_version_id IS NOT NULL OR v.version IS NOT 1""",
    "a change's versions are its entry's, one apart when changed": """
        SELECT count(*) FROM changes c
        LEFT JOIN versions o ON o.id = c.old_version_id
        LEFT JOIN versions n ON n.id = c.new_version_id
        WHERE o.entry_id <> c.entry_id OR n.entry_id <> c.entry_id
           OR (c.kind = 'changed' AND n.version IS NOT o.version + 1)
           OR (c.kind = 'removed' AND (o.id IS NULL OR n.id IS NOT NULL))""",
    "removed_at is set exactly when the last change removed the entry": """
        SELECT count(*) FROM entries e WHERE (removed_at IS NOT NULL) <> (
            (SELECT kind FROM changes c WHERE c.entry_id = e.id ORDER BY id DESC LIMIT 1)
            = 'removed')""",
    "every change has its outbox event and its fetch": """
        SELECT count(*) FROM changes c WHERE NOT EXISTS (
            SELECT 1 FROM outbox o WHERE o.change_id = c.id)
        OR NOT EXISTS (SELECT 1 FROM fetches f WHERE f.id = c.fetch_id)""",
    "each entry's key is in entry_keys": """
        SELECT count(*) FROM entries e WHERE NOT EXISTS (
            SELECT 1 FROM entry_keys k WHERE k.entry_id = e.id AND k.key = e.key
            AND k.replaced_at IS NULL)""",
}


@pytest.fixture(name="db", scope="module")
def _db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bigdb") / "small.db"
    assert bigdb.main([str(path), "--versions", "2000", "--sources", "60", "--recent", "40"]) == 0
    return path


@pytest.mark.parametrize("rule", CONSISTENCY)
def test_generated_rows_are_consistent_like_the_pipelines(db: Path, rule: str) -> None:
    """The generated history obeys what aggregator/store/rows.py keeps true."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute(CONSISTENCY[rule]).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM versions").fetchone()[0] == 2000
        fts = conn.execute("SELECT count(*) FROM versions_fts WHERE versions_fts MATCH 'talks'")
        assert fts.fetchone()[0] >= 5  # the FTS index was rebuilt over the loaded rows
    finally:
        conn.close()


def test_reading_commands_read_the_generated_history(db: Path) -> None:
    """history, search and digest --since 24h answer from the generated rows."""
    history = subprocess.run(
        [sys.executable, "-m", "aggregator", "history", "--db", str(db), "talks"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "5 versions" in history and "Ceasefire agreed after three days of talks" in history
    runner = CliRunner()
    found = runner.invoke(cli, ["search", "--db", str(db), bigdb.UNIQUE_WORD])
    assert found.exit_code == 0 and "»" + bigdb.UNIQUE_WORD + "«" in found.output
    digest = runner.invoke(cli, ["digest", "--db", str(db), "--since", "24h", "-f", "json"])
    assert digest.exit_code == 0, digest.output
    data = json.loads(digest.output)
    conn = sqlite3.connect(db)
    recent = conn.execute(
        "SELECT count(*) FROM changes WHERE detected_at >= ?", [data["since"]]
    ).fetchone()[0]
    conn.close()
    counts = data["counts"]
    assert counts["sources_polled"] == 60
    assert 20 <= sum(counts[k] for k in ("new", "changed", "removed", "restored")) == recent
    assert any(s["key"] == "talks" for s in data["stories"])


@pytest.fixture(name="statements")
def _statements(db: Path) -> Iterator[list[str]]:
    """Every SQL statement the reading commands' queries run (with their values)."""
    reader = Reader.open(db)
    seen: list[str] = []
    reader.db.conn.set_trace_callback(seen.append)
    try:
        talks = reader.resolve_entry("talks")
        reader.resolve_entry(talks.url)
        reader.resolve_entry(bigdb.UNIQUE_WORD)
        reader.entry_changes(talks.id)
        reader.versions(talks.id)
        reader.changes(ago(86400), now_db())
        reader.changes(ago(86400), now_db(), ["world"])
        reader.activity(ago(86400), now_db())
        reader.search(bigdb.COMMON_WORD)
        reader.sources()
        yield seen
    finally:
        reader.close()


def test_reading_queries_search_indexes_not_scan_big_tables(
    db: Path, statements: list[str]
) -> None:
    """No statement of history/diff/search/digest/sources scans a table that grows."""
    conn = sqlite3.connect(db)
    scans = []
    try:
        for sql in statements:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
                match = re.match(r"SCAN (\w+)", row[3])
                if match and match.group(1) in BIG and ALLOWED_SCAN not in row[3]:
                    scans.append(f"{row[3]}  <-  {sql[:120]}")
    finally:
        conn.close()
    assert statements and scans == []


def test_headline_history_by_key_reads_one_entry(db: Path) -> None:
    """The README's headline recipe filters inside the view's windows (no scan of versions)."""
    conn = sqlite3.connect(db)
    try:
        plan = [
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT headline FROM headline_history WHERE entry_key = 'talks'"
            )
        ]
        rows = conn.execute(
            "SELECT headline FROM headline_history WHERE entry_key = 'talks' ORDER BY since"
        ).fetchall()
    finally:
        conn.close()
    assert not [p for p in plan if re.match(r"SCAN (v|versions|e|entries)\b", p)], plan
    assert [r[0] for r in rows] == [title for title, _ in bigdb.TALKS]
