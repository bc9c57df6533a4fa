"""Rough edges a new user meets in rendered output.

Dates on times that are not today's, jsonl paths beside the config, word diffs
that never mark an unchanged word, and live-blog posts linked to themselves.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import feedparser
from hypothesis import given
from hypothesis import strategies as st

from aggregator.diff import render_html, render_markers, short_diff, word_diff
from aggregator.digest import build_digest, render
from aggregator.digest.model import text_time
from aggregator.store.queries import Reader
from tests import liveblog_story as blog
from tests import story
from tests.conftest import Harness
from tests.server import TestServer
from tests.test_config import run_cli

SELECTORS = {"post": "article.entry", "title": "h3", "body": ".text", "time": "time"}
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
        digest = build_digest(reader, *EVER, first_listing=True)
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
        "digest",
        "--from",
        "2025-01-01",
        "--db",
        str(harness.db_path),
        "--no-color",
        "--with-first-listing",
        cwd=tmp_path,
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
        "[[sinks]]\nsend_first_listing = true\n"
        'kind = "jsonl"\nname = "file"\npath = "events.jsonl"\n'
    )
    proc = run_cli("poll", "--config", str(config_dir / "aggregator.toml"), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert not (cwd / "events.jsonl").exists()
    lines = (config_dir / "events.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert {json.loads(line)["kind"] for line in lines} == {"new"}


# -- 8: live-blog posts link to themselves -----------------------------------


def anchored_blog(posts: list[blog.Post]) -> str:
    """A JSON-LD live blog whose posts have only a fragment ``@id`` (no ``url``)."""
    updates = [
        {
            "@type": "BlogPosting",
            "@id": f"#{p.ident}",
            "headline": p.headline,
            "articleBody": "\n".join(p.paragraphs),
            "datePublished": p.published,
        }
        for p in posts
    ]
    graph = {
        "@context": "https://schema.org",
        "@type": "LiveBlogPosting",
        "headline": blog.HEADLINE,
        "liveBlogUpdate": updates,
    }
    visible = "".join(f'<article id="{p.ident}"><p>{p.paragraphs[0]}</p></article>' for p in posts)
    return blog.render(
        "liveblog/jsonld.html",
        headline=blog.HEADLINE,
        description=blog.DESCRIPTION,
        jsonld=json.dumps(graph),
        posts=visible,
        ago="2",
        viewers="1,000",
        views="12,000",
        token="t0",
    )


def poll_blog(harness: Harness, pages: list[str], **options: object) -> None:
    harness.add("live", "/live.html", kind="liveblog", **options)
    for page in pages:
        harness.server.serve("/live.html", page, content_type="text/html; charset=utf-8")
        [result] = harness.poll()
        assert result.ok, result.error


def stored_links(harness: Harness) -> dict[str, str]:
    """Each entry's key (fragment of a URL key) and stored link (entry and latest version)."""
    rows = harness.rows(
        "SELECT e.key, e.url, v.link FROM entries e JOIN versions v ON v.id = e.current_version_id"
    )
    assert all(r["url"] == r["link"] for r in rows), rows
    return {r["key"].rsplit("#", 1)[-1]: r["url"] for r in rows}


def event_urls(harness: Harness) -> list[tuple[str, str]]:
    payloads = [json.loads(r["payload"]) for r in harness.rows("SELECT payload FROM outbox")]
    return [(e["kind"], e["entry"]["url"]) for e in payloads if e["type"] == "change"]


def digest_of(harness: Harness) -> tuple[str, str, str, dict[str, object]]:
    """The text, HTML and Atom digests and the JSON digest's data, of everything polled."""
    reader = Reader.open(harness.db_path)
    try:
        digest = build_digest(reader, *EVER, first_listing=True)
    finally:
        reader.close()
    formats = ("text", "html", "atom", "json")
    text, page, atom, data = (render(digest, fmt) for fmt in formats)
    return text, page, atom, json.loads(data)


def test_jsonld_posts_with_fragment_ids_link_to_their_anchor(harness: Harness) -> None:
    """Stored link, event, digest and Atom of a post carry `page#post-id`; the page its own."""
    page_url = harness.server.url("/live.html")
    epochs = [[blog.BEGIN, blog.CORRIDORS], [blog.BEGIN_EDITED, blog.CORRIDORS]]
    poll_blog(harness, [anchored_blog(posts) for posts in epochs])
    post = f"{page_url}#post-3"
    assert stored_links(harness) == {
        "page": blog.BLOG_URL,  # the canonical page link
        "post-3": post,
        "post-2": f"{page_url}#post-2",
    }
    assert ("changed", post) in event_urls(harness) and ("new", post) in event_urls(harness)
    text, page, atom, data = digest_of(harness)
    assert f"\n  {post}\n" in text
    assert f'<a href="{post}"' in page
    entries = feedparser.parse(atom).entries
    assert {e.link for e in entries if "Talks begin" in e.title} == {post}
    urls = {s["key"]: s["url"] for s in data["stories"]}  # type: ignore[index, union-attr]
    assert urls == {"page": blog.BLOG_URL, "#post-3": post, "#post-2": f"{page_url}#post-2"}


def test_jsonld_post_urls_keep_their_anchor(harness: Harness) -> None:
    """A post whose JSON-LD gives its own `url` (page plus anchor) keeps that url."""
    poll_blog(harness, [blog.blog_epoch(0), blog.blog_epoch(1)])
    links = stored_links(harness)
    assert links["post-3"] == f"{blog.BLOG_URL}#post-3"
    assert links["page"] == blog.BLOG_URL
    _, page, atom, _ = digest_of(harness)
    assert f'href="{blog.BLOG_URL}#post-4"' in page
    assert f"{blog.BLOG_URL}#post-3" in {e.link for e in feedparser.parse(atom).entries}


def test_selector_posts_link_to_their_html_id(harness: Harness) -> None:
    """A post element with an HTML `id` links to `page#id`; one without has no link of its own."""
    page_url = harness.server.url("/sel.html")
    harness.add("sel", "/sel.html", kind="liveblog", selectors=SELECTORS)
    posts = [(blog.BEGIN, False), (blog.CORRIDORS, True)]
    harness.server.serve(
        "/sel.html",
        blog.selector_blog(blog.HEADLINE, posts),
        content_type="text/html; charset=utf-8",
    )
    [result] = harness.poll()
    assert result.ok, result.error
    links = stored_links(harness)
    assert links["post-2"] == f"{page_url}#post-2"
    assert links["time:2022-03-10 07:00:00.000"] == ""
    assert ("new", f"{page_url}#post-2") in event_urls(harness)
    text, _, atom, _ = digest_of(harness)
    assert f"\n  {page_url}#post-2\n" in text
    assert f"{page_url}#post-2" in {e.link for e in feedparser.parse(atom).entries}


def test_posts_stored_without_their_anchor_are_not_changed_by_gaining_it(
    harness: Harness,
) -> None:
    """A post stored before links kept anchors (page link, or none) gets no `link` change."""
    poll_blog(harness, [blog.blog_epoch(0)])
    with sqlite3.connect(harness.db_path) as conn:  # as an older release stored them
        for table in ("entries", "versions"):
            conn.execute(f"UPDATE {table} SET {'url' if table == 'entries' else 'link'} = ''")
    conn.close()
    before = len(harness.changes())
    harness.server.serve("/live.html", blog.blog_epoch(0), content_type="text/html")
    harness.poll()
    assert harness.changes()[before:] == []
    harness.server.serve("/live.html", blog.blog_epoch(1), content_type="text/html")
    harness.poll()
    assert [(k, f) for k, _, f in harness.changes()[before:]] == [
        ("new", "[]"),
        ("changed", '["content"]'),
    ]
    assert stored_links(harness)["post-3"] == f"{blog.BLOG_URL}#post-3"
