"""Every SQL recipe in the README and the manual runs against a database built by the pipeline."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests import pg, story
from tests.conftest import Harness
from tests.readme_commands import doc_files

ROOT = Path(__file__).parent.parent
#: The recipes spelt for PostgreSQL are in this page; every other recipe is SQLite's.
POSTGRES_PAGE = "postgresql.md"
RECIPES = [
    recipe
    for path in doc_files(ROOT)
    if path.name != POSTGRES_PAGE
    for recipe in re.findall(r"```sql\n(.*?)```", path.read_text(), re.S)
]
PG_RECIPES = re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / POSTGRES_PAGE).read_text(), re.S)


def _polled(workdir: Path, database: Path | str | None = None) -> Path | str:
    """The story polled through four epochs into ``database`` (default: a file)."""
    from tests.server import TestServer

    server = TestServer().start()
    try:
        harness = Harness(workdir, server, database)
        harness.add("world", "/feed.xml")
        for epoch in range(4):
            server.serve("/feed.xml", story.rss(epoch))
            harness.poll()
    finally:
        server.stop()
    return harness.db_path


@pytest.fixture(name="db", scope="module")
def _db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(_polled(tmp_path_factory.mktemp("readme")))


@pytest.fixture(name="pg_db", scope="module")
def _pg_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_polled(tmp_path_factory.mktemp("readme-pg"), pg.server().fresh()))


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


def test_every_recipe_is_given_for_postgresql_too() -> None:
    """The PostgreSQL page spells each of the database page's recipes, and one more."""
    database = re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / "database.md").read_text(), re.S)
    assert len(PG_RECIPES) >= 7 and len(database) >= 7


@pytest.mark.parametrize("sql", PG_RECIPES, ids=[f"pg{i}" for i in range(len(PG_RECIPES))])
def test_postgresql_recipe_runs(pg_db: str, sql: str) -> None:
    """The PostgreSQL recipe is valid SQL against the real schema on a real server."""
    import psycopg

    with psycopg.connect(pg_db, options="-c default_transaction_read_only=on") as conn:
        conn.execute(sql).fetchall()


def test_postgresql_recipes_answer_like_sqlite_ones(db: Path, pg_db: str) -> None:
    """The headline-change and most-edited recipes give the same rows on both backends."""
    import psycopg

    lite = sqlite3.connect(db)
    try:
        edited = next(r for r in RECIPES if "edits" in r)
        ours = lite.execute(edited).fetchall()
    finally:
        lite.close()
    with psycopg.connect(pg_db) as conn:
        theirs = conn.execute(next(r for r in PG_RECIPES if "edits" in r)).fetchall()
        [first] = conn.execute("SELECT min(since) FROM headline_history").fetchone()
        shifted = next(r for r in PG_RECIPES if "headline_history" in r).replace(
            "now() - interval '3 hours'", "%s"
        )
        [(headline, _since, until)] = conn.execute(shifted, [first]).fetchall()
    assert [tuple(r) for r in theirs] == ours
    assert headline == story.TALKS.title and until is not None


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
