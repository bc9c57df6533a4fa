"""Every SQL recipe in the README and the manual runs against a database built by the pipeline."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests import story
from tests.conftest import Harness
from tests.readme_commands import doc_files

ROOT = Path(__file__).parent.parent
RECIPES = [
    recipe
    for path in doc_files(ROOT)
    for recipe in re.findall(r"```sql\n(.*?)```", path.read_text(), re.S)
]


@pytest.fixture(name="db", scope="module")
def _db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.server import TestServer

    server = TestServer().start()
    try:
        harness = Harness(tmp_path_factory.mktemp("readme"), server)
        harness.add("world", "/feed.xml")
        for epoch in range(4):
            server.serve("/feed.xml", story.rss(epoch))
            harness.poll()
    finally:
        server.stop()
    return harness.db_path


def test_readme_has_at_least_five_recipes() -> None:
    """The manual's 'Query the history' section offers five or more SQL recipes."""
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("sql", RECIPES, ids=[f"recipe{i}" for i in range(len(RECIPES))])
def test_readme_recipe_runs(db: Path, sql: str) -> None:
    """The recipe is valid SQL against the real schema."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_headline_recipe_answers_what_a_headline_said(db: Path) -> None:
    """The 'three hours ago' recipe, with the window moved to now, returns the old headline."""
    sql = next(r for r in RECIPES if "headline_history" in r)
    conn = sqlite3.connect(db)
    try:
        first = conn.execute("SELECT min(since) FROM headline_history").fetchone()[0]
        shifted = sql.replace("datetime('now', '-3 hours')", "?")
        [(headline, _since, until)] = conn.execute(shifted, [first]).fetchall()
    finally:
        conn.close()
    assert headline == story.TALKS.title and until is not None


def test_datasette_metadata_describes_real_tables_and_columns(db: Path) -> None:
    """Every table, view and column named in datasette/metadata.json exists."""
    meta = json.loads((ROOT / "datasette" / "metadata.json").read_text())
    conn = sqlite3.connect(db)
    try:
        for table, spec in meta["databases"]["aggregator"]["tables"].items():
            columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            assert columns, f"{table} does not exist"
            assert set(spec.get("columns", {})) <= columns, table
    finally:
        conn.close()
