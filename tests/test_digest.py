"""Digest rendering on a fixed database: golden text/markdown/json, safe HTML, valid Atom."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import feedparser
import pytest

from aggregator.digest import Digest, build_digest, render
from aggregator.store.queries import Reader
from tests import fixed_db

GOLDEN = Path(__file__).parent / "golden"
SINCE, UNTIL = "2022-03-10 00:00:00.000", "2022-03-11 00:00:00.000"


@pytest.fixture(name="digest", scope="module")
def _digest(tmp_path_factory: pytest.TempPathFactory) -> Digest:
    path = fixed_db.build(tmp_path_factory.mktemp("fixed") / "fixed.db")
    reader = Reader.open(path)
    try:
        return build_digest(reader, SINCE, UNTIL, first_listing=True)  # the whole story
    finally:
        reader.close()


@pytest.fixture(name="hostile", scope="module")
def _hostile(tmp_path_factory: pytest.TempPathFactory) -> Digest:
    path = fixed_db.build(tmp_path_factory.mktemp("hostile") / "h.db", epochs=1, hostile=True)
    reader = Reader.open(path)
    try:
        return build_digest(reader, SINCE, UNTIL, ["hostile"], first_listing=True)
    finally:
        reader.close()


@pytest.mark.parametrize(("fmt", "suffix"), [("text", "txt"), ("markdown", "md"), ("json", "json")])
def test_digest_matches_golden_output(digest: Digest, fmt: str, suffix: str) -> None:
    """Each plain format renders the fixed story exactly as the reviewed golden file."""
    out = render(digest, fmt)
    golden = GOLDEN / f"digest.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")


def test_digest_groups_by_story_newest_first_with_all_headlines(digest: Digest) -> None:
    """Stories are ordered by latest change and keep every headline they had."""
    keys = [s.key for s in digest.stories]
    assert keys == ["corridors", "talks", "hospital", "markets"]
    talks = digest.stories[1]
    assert talks.headlines == [fixed_db.story.TALKS.title, fixed_db.story.TALKS_1.title]
    assert digest.counts == {"new": 4, "changed": 3, "removed": 1, "restored": 1}


def test_appended_paragraph_is_shown_as_added_text_not_a_diff(digest: Digest) -> None:
    """An 'appended' edit carries only the new paragraph."""
    corridors = digest.stories[0]
    [edit] = next(e for e in corridors.events if e.edit == "appended").edits
    assert edit.appended == fixed_db.story.CORRIDORS_1.paragraphs[-1]
    assert "{+The Turkish minister" in render(digest, "text")
    assert "[-" not in render(digest, "text").split("corridors")[0]


def test_text_uses_colour_only_when_asked(digest: Digest) -> None:
    """Colour output has ANSI codes and no markers; plain output the reverse."""
    coloured, plain = render(digest, "text", color=True), render(digest, "text")
    assert "\x1b[32;4m" in coloured and "{+" not in coloured
    assert "\x1b[" not in plain and "{+" in plain


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs


def test_html_is_one_page_with_ins_and_del(digest: Digest) -> None:
    """The HTML digest is a whole page with inline CSS, an article per story and diffs."""
    page = render(digest, "html")
    parser = _Tags()
    parser.feed(page)
    assert parser.tags.count("article") == len(digest.stories)
    assert {"style", "ins", "del", "h1"} <= set(parser.tags)
    assert "script" not in parser.tags and "link" not in parser.tags


def test_html_escapes_a_hostile_feed(hostile: Digest) -> None:
    """A script title, javascript: links and svg onload cannot reach the HTML digest."""
    assert hostile.stories[0].title.startswith("<script>alert(1)</script>")
    page = render(hostile, "html")
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags and "svg" not in parser.tags and "img" not in parser.tags
    assert not [a for a in parser.attrs if a[0].startswith("on")]
    assert "javascript:" not in " ".join(v or "" for _, v in parser.attrs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_markdown_escapes_a_hostile_feed(hostile: Digest) -> None:
    """Feed text cannot become a Markdown link or raw HTML."""
    out = render(hostile, "markdown")
    assert "<script>" not in out
    assert r"\<script\>alert(1)\</script\> and a \[link\](javascript:alert(2))" in out


def test_atom_feed_parses_with_one_entry_per_change(digest: Digest) -> None:
    """The Atom digest is a valid feed whose entries are the changes, each with its diff."""
    feed = feedparser.parse(render(digest, "atom"))
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    total = sum(len(s.events) for s in digest.stories)
    assert len(feed.entries) == total
    assert len({e.id for e in feed.entries}) == total
    edits = [e for e in feed.entries if "changed summary" in e.summary]
    assert edits and all("<ins>" in e.content[0].value for e in edits)
    assert feed.entries[0].updated.startswith("2022-03-10T11:00")


def test_atom_escapes_a_hostile_feed(hostile: Digest) -> None:
    """A hostile title stays text in the Atom feed and no javascript: link is emitted."""
    text = render(hostile, "atom")
    feed = feedparser.parse(text)
    assert not feed.bozo
    assert "javascript:" not in " ".join(
        link.href for e in feed.entries for link in e.get("links", [])
    )
    assert "<script>" not in text


def test_json_digest_round_trips(digest: Digest) -> None:
    """The JSON digest parses and names each story's changes with versions."""
    data = json.loads(render(digest, "json"))
    talks = next(s for s in data["stories"] if s["key"] == "talks")
    assert [c["version"]["after"] for c in talks["changes"]] == [1, 2, 3]
    assert data["counts"]["sources_polled"] == 1


def test_a_digest_leaves_out_the_first_listing_unless_asked(tmp_path: Path) -> None:
    """The first poll's stories are the baseline: a default digest has only what came after."""
    path = fixed_db.build(tmp_path / "fixed.db")
    reader = Reader.open(path)
    try:
        default = build_digest(reader, SINCE, UNTIL)
        whole = build_digest(reader, SINCE, UNTIL, first_listing=True)
    finally:
        reader.close()
    assert whole.counts["new"] == 4 and default.counts["new"] == 1
    assert default.counts["changed"] == whole.counts["changed"] == 3
    first = {s.entry_id for s in whole.stories} - {s.entry_id for s in default.stories}
    assert first and all(s.events[0].kind == "new" for s in whole.stories if s.entry_id in first)
