"""Live blogs (kind = "liveblog") polled through the real pipeline over HTTP."""

from __future__ import annotations

import json
import time

from tests import liveblog_story as story
from tests.conftest import Harness

SELECTORS = {"post": "article.entry", "title": "h3", "body": ".text", "time": "time"}


def new_changes(harness: Harness, seen: int) -> list[tuple[str, str, str]]:
    """Changes after the first ``seen``, with post keys shortened to the fragment."""
    return [(k, key.rsplit("#", 1)[-1], f) for k, key, f in harness.changes()[seen:]]


def serve_html(harness: Harness, path: str, body: str) -> None:
    harness.server.serve(path, body, content_type="text/html; charset=utf-8")


def test_jsonld_blog_epochs_produce_exactly_the_expected_changes(harness: Harness) -> None:
    """New posts, edits, re-ordering, deletion, restoring and truncation each give their event."""
    harness.add("live", "/live.html", kind="liveblog")
    expected = [
        [("new", "page", "[]"), ("new", "post-3", "[]"), ("new", "post-2", "[]"),
         ("new", "post-1", "[]")],
        [("new", "post-4", "[]"), ("changed", "post-3", '["content"]')],
        [],  # re-ordered posts and noise (entities, spacing, counters, "N minutes ago")
        [("changed", "page", '["title"]'), ("removed", "post-2", "[]")],
        [("restored", "post-2", "[]")],
        [],  # the oldest post fell off the bottom: not a deletion
    ]  # fmt: skip
    seen = 0
    for epoch, want in enumerate(expected):
        serve_html(harness, "/live.html", story.blog_epoch(epoch))
        [result] = harness.poll()
        assert result.ok, result.error
        assert new_changes(harness, seen) == want, f"epoch {epoch}"
        seen += len(want)


def test_versions_and_edit_kind_of_a_post(harness: Harness) -> None:
    """An edited post body is a second version of the same entry, marked as edited."""
    harness.add("live", "/live.html", kind="liveblog")
    for epoch in range(2):
        serve_html(harness, "/live.html", story.blog_epoch(epoch))
        harness.poll()
    rows = harness.rows(
        "SELECT v.version, v.title, v.content_text, v.published_at FROM versions v"
        " JOIN entries e ON e.id = v.entry_id WHERE e.key LIKE '%#post-3' ORDER BY v.version"
    )
    assert [(r["version"], r["content_text"]) for r in rows] == [
        (1, story.BEGIN.paragraphs[0]),
        (2, story.BEGIN_EDITED.paragraphs[0]),
    ]
    assert {r["published_at"] for r in rows} == {"2022-03-10 07:00:00.000"}
    [edit] = harness.rows("SELECT edit FROM changes WHERE kind = 'changed'")
    assert edit == {"edit": "edited"}
    [page] = harness.rows("SELECT title, url FROM entries WHERE key = 'page'")
    assert page == {"title": story.HEADLINE, "url": story.BLOG_URL}
    [source] = harness.rows("SELECT title FROM sources")
    assert source["title"] == story.HEADLINE


def test_appended_paragraph_in_a_post_is_an_append(harness: Harness) -> None:
    """A post that only gains a paragraph is changed with edit = appended."""
    harness.add("live", "/live.html", kind="liveblog")
    serve_html(harness, "/live.html", story.jsonld_blog(story.HEADLINE, [story.END]))
    harness.poll()
    longer = story.Post(
        story.END.ident, story.END.headline, (*story.END.paragraphs, "More to follow."),
        story.END.published,
    )  # fmt: skip
    serve_html(harness, "/live.html", story.jsonld_blog(story.HEADLINE, [longer]))
    harness.poll()
    rows = harness.rows("SELECT kind, fields, edit FROM changes WHERE kind = 'changed'")
    assert rows == [{"kind": "changed", "fields": '["content"]', "edit": "appended"}]


def test_removals_all_marks_the_fallen_off_post_removed(harness: Harness) -> None:
    """With removals = "all" a post missing from the bottom counts as deleted too."""
    harness.add("live", "/live.html", kind="liveblog", removals="all")
    serve_html(harness, "/live.html", story.blog_epoch(4))
    harness.poll()
    serve_html(harness, "/live.html", story.blog_epoch(5))
    harness.poll()
    assert new_changes(harness, 5) == [("removed", "post-1", "[]")]


def test_selector_blog_tracks_posts_with_and_without_ids(harness: Harness) -> None:
    """CSS selectors read posts; a post without an id is keyed by its time, so edits are edits."""
    harness.add("sel", "/sel.html", kind="liveblog", selectors=SELECTORS)
    epochs = [
        [(story.BEGIN, False), (story.CORRIDORS, True), (story.ARRIVE, True)],
        [(story.END, True), (story.BEGIN_EDITED, False), (story.CORRIDORS, True),
         (story.ARRIVE, True)],
        [(story.CORRIDORS, True), (story.END, True), (story.ARRIVE, True),
         (story.BEGIN_EDITED, False)],
        [(story.END, True), (story.BEGIN_EDITED, False), (story.ARRIVE, True)],
    ]  # fmt: skip
    expected = [
        [("new", "page", "[]"), ("new", "time:2022-03-10 07:00:00.000", "[]"),
         ("new", "post-2", "[]"), ("new", "post-1", "[]")],
        [("new", "post-4", "[]"), ("changed", "time:2022-03-10 07:00:00.000", '["content"]')],
        [],
        [("removed", "post-2", "[]")],
    ]  # fmt: skip
    seen = 0
    for epoch, (posts, want) in enumerate(zip(epochs, expected, strict=True)):
        serve_html(harness, "/sel.html", story.selector_blog(story.HEADLINE, posts, noise=epoch))
        [result] = harness.poll()
        assert result.ok, result.error
        assert new_changes(harness, seen) == want, f"epoch {epoch}"
        seen += len(want)
    [title] = harness.rows("SELECT title FROM versions WHERE title LIKE 'Talks end%'")
    assert title == {"title": story.END.headline}


def test_jsonld_shapes_graph_lists_and_an_invalid_block(harness: Harness) -> None:
    """@graph, lists, several blocks and @type lists are read; an invalid block is skipped."""
    harness.add("graph", "/graph.html", kind="liveblog")
    serve_html(harness, "/graph.html", (story.FIXTURES / "liveblog/graph.html").read_text())
    [result] = harness.poll()
    assert result.ok and result.counts["new"] == 4
    rows = harness.rows(
        "SELECT e.key, v.title, v.author, v.content_text FROM entries e"
        " JOIN versions v ON v.id = e.current_version_id ORDER BY e.id"
    )
    assert [(r["key"], r["title"]) for r in rows] == [
        ("page", "Talks in Antalya: live updates"),
        ("https://news.example/live#post-1", "Ministers arrive"),
        ("https://news.example/live#post-2", "Talks begin"),
        ("time:2022-03-10 07:30:00.000", "No id at all"),
    ]
    assert rows[1]["author"] == "Staff reporter"
    assert rows[1]["content_text"].endswith("near Antalya & talks start soon.")
    assert (
        rows[2]["content_text"]
        == "The meeting began at 07:00.\n\nTurkey's minister sits between the two."
    )


def test_malformed_jsonld_removes_nothing_and_says_why(harness: Harness) -> None:
    """When the only LiveBlogPosting block is broken the poll fails naming it; none is removed."""
    harness.add("live", "/live.html", kind="liveblog")
    serve_html(harness, "/live.html", story.blog_epoch(0))
    harness.poll()
    broken = story.blog_epoch(0, noise=1).replace('"liveBlogUpdate": [', '"liveBlogUpdate": [,', 1)
    serve_html(harness, "/live.html", broken)
    [result] = harness.poll()
    assert not result.ok and result.outcome == "error"
    assert (result.error or "").startswith("no live-blog posts found: JSON-LD block ")
    assert "JSON-LD block 3 is not valid JSON" in (result.error or "")
    assert [c for c in harness.changes() if c[0] != "new"] == []
    [entries] = harness.rows("SELECT count(*) AS n FROM entries WHERE removed_at IS NULL")
    assert entries["n"] == 4


def test_page_without_posts_keeps_history(harness: Harness) -> None:
    """A live blog showing no posts is a recorded failure that deletes nothing."""
    harness.add("live", "/live.html", kind="liveblog")
    serve_html(harness, "/live.html", story.blog_epoch(0))
    harness.poll()
    serve_html(harness, "/live.html", story.jsonld_blog(story.HEADLINE_2, [], noise=3))
    [result] = harness.poll()
    assert not result.ok
    assert "its LiveBlogPosting JSON-LD lists no liveBlogUpdate posts" in (result.error or "")
    assert new_changes(harness, 4) == []


def test_two_thousand_posts(harness: Harness) -> None:
    """A 2,000-post blog is stored in one poll, and one edited post among them is one change."""
    posts = [
        story.Post(f"p{i}", f"Update {i}", (f"Body of update number {i}.",),
                   f"2022-03-{10 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z")
        for i in range(2000, 0, -1)
    ]  # fmt: skip
    harness.add("big", "/big.html", kind="liveblog")
    serve_html(harness, "/big.html", story.jsonld_blog(story.HEADLINE, posts))
    started = time.monotonic()
    [result] = harness.poll()
    elapsed = time.monotonic() - started
    assert result.ok and result.counts["new"] == 2001
    posts[500] = story.Post(posts[500].ident, "Edited", posts[500].paragraphs, posts[500].published)
    serve_html(harness, "/big.html", story.jsonld_blog(story.HEADLINE, posts))
    [second] = harness.poll()
    assert dict(second.counts) == {"changed": 1}
    assert elapsed < 30, f"first poll of 2,000 posts took {elapsed:.1f}s"


def test_html_where_a_feed_was_expected_and_a_feed_where_html_was(harness: Harness) -> None:
    """Serving the wrong kind of document is a clear error for that source only."""
    harness.add("feed", "/live.html")
    harness.add("blog", "/feed.xml", kind="liveblog")
    serve_html(harness, "/live.html", story.blog_epoch(0))
    harness.server.serve("/feed.xml", '<?xml version="1.0"?><rss version="2.0"><channel/></rss>')
    results = {r.source: r for r in harness.poll()}
    assert "expected a feed but got an HTML page" in (results["feed"].error or "")
    assert 'kind = "liveblog"' in (results["feed"].error or "")
    assert "expected an HTML page for kind 'liveblog'" in (results["blog"].error or "")
    assert harness.rows("SELECT count(*) AS n FROM entries") == [{"n": 0}]


def test_change_events_name_the_post_and_fields(harness: Harness) -> None:
    """The outbox event of an edited post carries its key, link, fields and word diff."""
    harness.add("live", "/live.html", kind="liveblog")
    for epoch in range(2):
        serve_html(harness, "/live.html", story.blog_epoch(epoch))
        harness.poll()
    [row] = harness.rows(
        "SELECT o.payload FROM outbox o JOIN changes c ON c.id = o.change_id"
        " WHERE c.kind = 'changed'"
    )
    event = json.loads(row["payload"])
    assert event["entry"]["key"].endswith("#post-3")
    assert event["entry"]["url"] == f"{story.BLOG_URL}#post-3"
    assert (event["fields"], event["edit"]) == (["content"], "edited")
    assert event["source"]["kind"] == "liveblog"
    assert "[-" in event["diff"] and "{+" in event["diff"]
