"""What an edit is called, and how a word diff shows numbers, in every place a user reads it.

`appended` means text was only added (a sentence at the end of a paragraph, a new
paragraph, words inserted), nothing removed or rewritten. A word diff never splits a
number such as 1.9.3. Each check runs the real commands against a feed on the local server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Harness
from tests.test_cli_rough_edges import run
from tests.webrig import start_serve, stop_serve

FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Releases</title><link>https://rel.example/</link>
<description>x</description>{items}</channel></rss>
"""
ITEM = """<item><title>{title}</title><link>https://rel.example/{key}</link>
<guid isPermaLink="false">{key}</guid><description>{text}</description></item>"""

#: (key, title, description) per poll: each entry changes once, in one way.
POLLS = [
    [
        ("upgrade", "Upgrade notice", "Upgrade to 1.9.3 now."),
        ("talks", "Talks", "Talks ended.&lt;br&gt;&lt;br&gt;Delegates left."),
        ("inserted", "Inserted", "The meeting was held on Thursday."),
        ("cut", "Cut", "The meeting was long and tense."),
    ],
    [
        ("upgrade", "Upgrade notice", "Upgrade to 1.9.4 now; 1.9.3 was incomplete."),
        ("talks", "Talks", "Talks ended. No deal was reached.&lt;br&gt;&lt;br&gt;Delegates left."),
        ("inserted", "Inserted", "The meeting was held in Antalya on Thursday."),
        ("cut", "Cut", "The meeting was long."),
    ],
]
EXPECTED_EDIT = {"upgrade": "edited", "talks": "appended", "inserted": "appended", "cut": "edited"}
UPGRADE_DIFF = "Upgrade to [-1.9.3-]{+1.9.4+} now{+; 1.9.3 was incomplete+}."


def feed(poll: int) -> str:
    items = "".join(ITEM.format(key=k, title=t, text=d) for k, t, d in POLLS[poll])
    return FEED.format(items=items)


@pytest.fixture(name="edited")
def _edited(harness: Harness) -> Harness:
    """The feed polled twice with a jsonl sink: each entry changed once."""
    harness.add("rel", "/rel.xml")
    harness.extra = '[[sinks]]\nkind = "jsonl"\nname = "events"\npath = "events.jsonl"\n'
    for poll in range(2):
        harness.server.serve("/rel.xml", feed(poll))
        failed = [r.error for r in harness.poll() if not r.ok]
        assert not failed, failed
    return harness


def test_appended_means_text_was_only_added(edited: Harness) -> None:
    """The stored change, the event a sink receives and `digest --format json` agree:
    a sentence or words added is `appended`; a replaced or removed word is `edited`."""
    rows = edited.rows(
        "SELECT e.key, c.edit FROM changes c JOIN entries e ON e.id = c.entry_id"
        " WHERE c.kind = 'changed'"
    )
    assert {r["key"]: r["edit"] for r in rows} == EXPECTED_EDIT
    events = [json.loads(line) for line in (edited.tmp / "events.jsonl").read_text().splitlines()]
    sent = {e["entry"]["key"]: e["edit"] for e in events if e.get("kind") == "changed"}
    assert sent == EXPECTED_EDIT
    proc = run("digest", "--format", "json", "--since", "1h", cwd=edited.tmp)
    assert proc.returncode == 0, proc.stderr
    stories = json.loads(proc.stdout)["stories"]
    shown = {s["key"]: c["edit"] for s in stories for c in s["changes"] if c["kind"] == "changed"}
    assert shown == EXPECTED_EDIT


def test_a_sentence_added_at_the_end_is_shown_as_added_text(edited: Harness) -> None:
    """The text digest shows the added sentence as added, with nothing struck out."""
    proc = run("history", "talks", "--no-color", cwd=edited.tmp)
    assert proc.returncode == 0, proc.stderr
    assert "appended" in proc.stdout and "{+No deal was reached.+}" in proc.stdout
    assert "[-" not in proc.stdout


def test_the_terminal_diff_keeps_numbers_whole(edited: Harness) -> None:
    """`aggregator diff` shows 1.9.3 replaced by 1.9.4 and a clause added, never 1.9.{+4…"""
    proc = run("diff", "upgrade", "--no-color", cwd=edited.tmp)
    assert proc.returncode == 0, proc.stderr
    assert UPGRADE_DIFF in proc.stdout
    assert not re.search(r"\d\.\{\+|\d\.\[-", proc.stdout)


def test_the_html_digest_keeps_numbers_whole(edited: Harness) -> None:
    """The HTML digest marks <del>1.9.3</del><ins>1.9.4</ins>, whole."""
    proc = run("digest", "--format", "html", "--since", "1h", "-o", "d.html", cwd=edited.tmp)
    assert proc.returncode == 0, proc.stderr
    page = (edited.tmp / "d.html").read_text()
    assert "<del>1.9.3</del><ins>1.9.4</ins> now<ins>; 1.9.3 was incomplete</ins>." in page


@pytest.fixture(name="served")
def _served(edited: Harness, tmp_path: Path) -> Iterator[str]:
    proc, url = start_serve(["--db", str(edited.db_path), "--port", "0"], tmp_path / "serve.err")
    try:
        yield url
    finally:
        stop_serve(proc)


def test_the_web_view_keeps_numbers_whole(edited: Harness, served: str) -> None:
    """The story page of `aggregator serve` shows the same whole-number diff."""
    [row] = edited.rows("SELECT id FROM entries WHERE key = 'upgrade'")
    page = httpx.get(f"{served}/story/{row['id']}", timeout=30).text
    assert "<del>1.9.3</del><ins>1.9.4</ins> now<ins>; 1.9.3 was incomplete</ins>." in page
    api = httpx.get(f"{served}/api/changes", timeout=30).json()["changes"]
    [change] = [c for c in api if c["entry_id"] == row["id"] and c["kind"] == "changed"]
    assert change["edit"] == "edited"
    assert any(UPGRADE_DIFF in (e["diff"] or "") for e in change["edits"])
