"""history, diff, search and sources on a database built by the pipeline from the test server."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aggregator.cli import main
from aggregator.store import Store
from aggregator.store.queries import Reader
from aggregator.store.schema import migrations
from tests import story
from tests.conftest import Harness

#: Every test here runs on SQLite and on a real PostgreSQL server.
BACKENDS = ("sqlite", "postgresql")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(name="polled")
def _polled(harness: Harness) -> Harness:
    harness.add("world", "/feed.xml")
    for epoch in range(4):
        harness.server.serve("/feed.xml", story.rss(epoch))
        harness.poll()
    return harness


def test_history_lists_every_version_by_key(polled: Harness) -> None:
    """`history KEY` shows each change with versions and both headlines."""
    result = cli("history", "talks", "--db", str(polled.db_path))
    assert result.exit_code == 0, result.output
    assert "3 versions" in result.output
    assert "changed title (v1 → v2)" in result.output
    assert story.TALKS.title in result.output and story.TALKS_1.title in result.output


@pytest.mark.parametrize("term", ["1", f"{story.BASE}/antalya-talks", "tal", "Antalya"])
def test_history_finds_an_entry_by_id_url_prefix_or_word(polled: Harness, term: str) -> None:
    """An entry is found by its id, URL, a key prefix or a word in its text."""
    result = cli("history", term, "--db", str(polled.db_path))
    assert result.exit_code == 0, result.output
    assert "key talks" in result.output


def test_history_lists_candidates_when_ambiguous(polled: Harness) -> None:
    """A term matching several entries fails and lists them with their ids."""
    result = CliRunner().invoke(main, ["history", "minister", "--db", str(polled.db_path)])
    assert result.exit_code == 1
    assert "entries match 'minister'" in result.output and "(hospital)" in result.output


def test_diff_between_two_versions(polled: Harness) -> None:
    """`diff --from 1 --to 3` marks the headline and the rewritten sentence."""
    result = cli("diff", "talks", "--from", "1", "--to", "3", "--db", str(polled.db_path))
    assert result.exit_code == 0, result.output
    assert "[-Foreign ministers meet" in result.output
    assert "Antalya {+and produced no breakthrough on ending the war+}" in result.output
    assert "[-Antalya-]" not in result.output  # an unchanged word is not marked


def test_diff_names_a_missing_version(polled: Harness) -> None:
    """Asking for a version that does not exist says which versions do."""
    result = CliRunner().invoke(main, ["diff", "talks", "--to", "9", "--db", str(polled.db_path)])
    assert result.exit_code == 2 and "has no version 9 (it has 1 to 3)" in result.output


def test_search_finds_text_since_edited_out(polled: Harness) -> None:
    """A headline that was rewritten is still found, flagged as gone from the current version."""
    result = cli("search", "first talks since", "--db", str(polled.db_path))
    assert result.exit_code == 0, result.output
    assert "v1" in result.output and "(no longer in the current version v3)" in result.output


def test_search_treats_input_as_text(polled: Harness) -> None:
    """FTS5 syntax in user input is plain text: no syntax error, nothing matched by it."""
    result = cli("search", 'run" AND', "NEAR(", "*", "--db", str(polled.db_path))
    assert result.exit_code == 1 and "no version matches" in result.output  # like grep


def test_search_understands_phrases_or_and_exclusions(polled: Harness) -> None:
    """A phrase, OR and -word mean the same on both backends (PostgreSQL's web search)."""
    db = str(polled.db_path)
    assert cli("search", '"talks since"', "--db", db).exit_code == 0
    assert cli("search", '"since talks"', "--db", db).exit_code == 1  # words out of order
    both = cli("search", "breakthrough OR antalya", "--db", db)
    only = cli("search", "antalya -breakthrough", "--db", db)
    assert both.exit_code == 0 and only.exit_code == 0, (both.output, only.output)
    hits = [line.split()[0] for line in both.output.splitlines() if line.startswith("  v")]
    kept = [line.split()[0] for line in only.output.splitlines() if line.startswith("  v")]
    assert "v3" in hits and kept and set(kept) < set(hits)  # v3 says "breakthrough"
    assert "breakthrough" not in only.output.lower()
    excluded = cli("search", "--db", db, "--", "-breakthrough")
    assert excluded.exit_code != 0 and "only excludes" in excluded.output


def test_sources_shows_health_and_counts(polled: Harness) -> None:
    """`sources` lists kind, interval, failures, entries and versions."""
    result = cli("sources", "--db", str(polled.db_path))
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()[:2]
    assert header.split()[:3] == ["name", "kind", "interval"]
    assert row.split()[:3] == ["world", "feed", "15m"] and row.split()[-2:] == ["4", "7"]


def test_digest_command_writes_a_file_and_filters_by_source(
    polled: Harness, tmp_path: Path
) -> None:
    """`digest --output` writes the whole digest; an unknown --source is refused."""
    out = tmp_path / "d" / "digest.json"
    db = str(polled.db_path)
    result = cli(
        "digest", "--since", "1h", "--format", "json", "-o", str(out), "--db", db,
        "--with-first-listing",  # the first poll's three stories too (its baseline)
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["counts"]["new"] == 4 and not list(out.parent.glob(".*"))
    bad = CliRunner().invoke(main, ["digest", "--source", "nope", "--db", db])
    assert bad.exit_code == 2 and "no source named nope" in bad.output
    both = CliRunner().invoke(main, ["digest", "--since", "1h", "--from", "2022-01-01", "--db", db])
    assert both.exit_code == 2 and "either --since or --from" in both.output


def test_reading_a_missing_database_says_what_to_do(tmp_path: Path) -> None:
    """A missing database is a one-line error pointing at poll/demo."""
    result = CliRunner().invoke(main, ["sources", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1 and "run `aggregator poll`" in result.output


def test_reader_works_while_the_writer_holds_a_transaction(polled: Harness) -> None:
    """A read-only reader sees the last committed state while a write is open."""
    store = Store.open(polled.db_path)
    try:
        with contextlib.suppress(InterruptedError), store.db.atomic():
            store.db.execute("UPDATE entries SET title = 'uncommitted' WHERE key = 'talks'")
            reader = Reader.open(polled.db_path)
            try:
                assert reader.resolve_entry("talks").title == story.TALKS_1.title
            finally:
                reader.close()
            raise InterruptedError  # roll the write back
    finally:
        store.close()


def test_new_versions_are_indexed_for_search(polled: Harness) -> None:
    """Versions written after the migration are searchable right away (triggers)."""
    reader = Reader.open(polled.db_path)
    try:
        hits = reader.search("breakthrough")
    finally:
        reader.close()
    assert [(h.entry.key, h.version, h.current) for h in hits] == [("talks", 3, True)]


def test_an_old_release_database_is_migrated_and_backfilled(tmp_path: Path) -> None:
    """A database made by migration 0001 only opens, gains views and indexes old text."""
    from sqlite_utils import Database

    path = tmp_path / "old.db"
    db = Database(path)
    later = [m.name for m in migrations.pending(db) if m.name != "0001_core"]
    migrations.apply(db, stop_before=later)
    db.execute(
        "INSERT INTO sources (id, name, kind, url, config_url, added_at)"
        " VALUES (1, 'old', 'feed', 'https://x.example/f', 'https://x.example/f', '2020-01-01')"
    )
    db.execute(
        "INSERT INTO entries (id, source_id, key, title, first_seen_at, last_seen_at,"
        " version_count, current_version_id) VALUES (1, 1, 'k', 'Old', '2020', '2020', 1, 1)"
    )
    db.execute(
        "INSERT INTO versions (id, entry_id, version, title, summary_text, content_hash, seen_at)"
        " VALUES (1, 1, 1, 'Old headline', 'archived words', 'h', '2020-01-01')"
    )
    db.conn.commit()
    db.close()
    reader = Reader.open(path)
    try:
        assert [h.entry.key for h in reader.search("archived")] == ["k"]
        rows = reader.db.execute("SELECT headline FROM headline_history").fetchall()
        assert rows == [("Old headline",)]
    finally:
        reader.close()
