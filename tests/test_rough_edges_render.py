"""Rough edges a new user meets in rendered output.

Dates on times that are not today's, jsonl paths beside the config, word diffs
that never mark an unchanged word, and live-blog posts linked to themselves.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from aggregator.diff import render_html, render_markers, short_diff, word_diff
from aggregator.digest import build_digest, render
from aggregator.digest.model import text_time
from aggregator.store.queries import Reader
from tests import story
from tests.conftest import Harness
from tests.server import TestServer
from tests.test_config import run_cli

EVER = ("2000-01-01 00:00:00.000", "2100-01-01 00:00:00.000")
WORDS = st.text(alphabet="ab .,\n", max_size=40)


# -- 7: word diffs ------------------------------------------------------------


def test_a_word_followed_by_added_text_is_not_marked() -> None:
    """Text added after a word marks only the added text, in markers and in HTML."""
    old = "They met in the morning"
    new = "They met in the morning and talked for six hours without a break"
    segments = word_diff(old, new)
    assert render_markers(segments) == (
        "They met in the morning {+and talked for six hours without a break+}"
    )
    assert render_html(segments) == (
        "They met in the morning <ins>and talked for six hours without a break</ins>"
    )
    assert short_diff("near Antalya.", "near Antalya and no progress.") == (
        "near Antalya {+and no progress+}."
    )


def test_a_changed_word_is_still_marked_in_markers_and_html() -> None:
    """A replaced word is a deletion and an insertion; the words around it are untouched."""
    segments = word_diff("talks end in Antalya today", "talks end in Ankara today")
    assert render_markers(segments) == "talks end in [-Antalya-]{+Ankara+} today"
    assert render_html(segments) == "talks end in <del>Antalya</del><ins>Ankara</ins> today"


@given(old=WORDS, new=WORDS)
def test_word_diff_round_trips(old: str, new: str) -> None:
    """Equal plus inserted segments give the new text; equal plus deleted the old one."""
    segments = word_diff(old, new)
    assert "".join(s.text for s in segments if s.op != "delete") == new
    assert "".join(s.text for s in segments if s.op != "insert") == old


@given(old=WORDS, added=st.text(alphabet="ab ,", max_size=20))
def test_appending_words_never_marks_a_deletion(old: str, added: str) -> None:
    """Words added at the end delete nothing: no unchanged word is marked as replaced."""
    new = old + " " + added
    assert [s for s in word_diff(old, new) if s.op == "delete" and s.text.strip()] == []


def test_html_and_text_digests_do_not_mark_the_word_before_an_addition(
    harness: Harness,
) -> None:
    """Through the real pipeline: the edited summary ends `Antalya {+and produced…+}`."""
    harness.add("world", "/feed.xml")
    for epoch in range(3):
        harness.server.serve("/feed.xml", story.rss(epoch))
        [result] = harness.poll()
        assert result.ok, result.error
    reader = Reader.open(harness.db_path)
    try:
        digest = build_digest(reader, *EVER)
    finally:
        reader.close()
    text, page = render(digest, "text"), render(digest, "html")
    assert "hotel near Antalya {+and produced no breakthrough on ending the war+}." in text
    assert "[-Antalya-]" not in text
    assert "hotel near Antalya <ins>and produced no breakthrough on ending the war</ins>." in page
    assert "<del>Antalya</del>" not in page


# -- 3: dates on times that are not today's ----------------------------------


def test_text_time_has_the_date_unless_today_and_the_year_unless_this_year() -> None:
    """Today is `09:00`; another day of this year `Nov 27 09:00`; another year adds it."""
    today = date(2026, 11, 29)
    assert text_time("2026-11-29 09:00:12.345", today) == "09:00"
    assert text_time("2026-11-27 09:00:12.345", today) == "Nov 27 09:00"
    assert text_time("2026-03-05 23:59:00.000", today) == "Mar 5 23:59"
    assert text_time("2025-11-29 09:00:00.000", today) == "Nov 29 2025 09:00"


def test_history_and_digest_show_the_date_of_an_earlier_day(
    harness: Harness, tmp_path: Path
) -> None:
    """A story spanning days reads forwards: yesterday's change carries its date."""
    harness.add("world", "/feed.xml")
    for epoch in range(2):
        harness.server.serve("/feed.xml", story.rss(epoch))
        harness.poll()
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute(
            "UPDATE changes SET detected_at = '2025-11-27 09:00:00.000' WHERE kind = 'new'"
        )
        today_times = [
            r[0][11:16] for r in conn.execute("SELECT detected_at FROM changes WHERE kind != 'new'")
        ]
    conn.close()
    assert today_times, "epoch 1 changes something"
    proc = run_cli("history", "talks", "--db", str(harness.db_path), "--no-color", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "  Nov 27 2025 09:00  new (v1)" in proc.stdout
    assert f"  {today_times[0]}  changed" in proc.stdout
    proc = run_cli(
        "digest", "--from", "2025-01-01", "--db", str(harness.db_path), "--no-color", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "  Nov 27 2025 09:00  new (v1)" in proc.stdout


# -- 4: a relative jsonl path is beside the config ---------------------------


def test_relative_jsonl_path_is_beside_the_config_not_the_working_directory(
    tmp_path: Path, server: TestServer
) -> None:
    """Config in A with `path = "events.jsonl"`, run from B: the file appears in A."""
    config_dir, cwd = tmp_path / "A", tmp_path / "B"
    config_dir.mkdir()
    cwd.mkdir()
    server.serve("/feed.xml", story.rss(0))
    (config_dir / "aggregator.toml").write_text(
        '[storage]\ndatabase = "a.db"\n\n'
        f'[[sources]]\nname = "world"\nurl = "{server.url("/feed.xml")}"\n\n'
        '[[sinks]]\nkind = "jsonl"\nname = "file"\npath = "events.jsonl"\n'
    )
    proc = run_cli("poll", "--config", str(config_dir / "aggregator.toml"), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert not (cwd / "events.jsonl").exists()
    lines = (config_dir / "events.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert {json.loads(line)["kind"] for line in lines} == {"new"}
