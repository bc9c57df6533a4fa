"""follow_links: a feed's linked articles versioned as pages, with a bounded, slowing cadence."""

from __future__ import annotations

from xml.sax.saxutils import escape

import pytest

from aggregator.follow import DAY, MAX_AGE, next_check_delay
from tests import liveblog_story as story
from tests.conftest import Harness


def feed(harness: Harness, paths: list[str]) -> str:
    items = "".join(
        f"<item><title>Story {p}</title><link>{escape(harness.server.url(p))}</link>"
        f"<guid>{p}</guid></item>"
        for p in paths
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>W</title>{items}</channel></rss>'
    )


def serve_article(harness: Harness, path: str, epoch: int, noise: int = 0) -> None:
    harness.server.serve(path, story.talks_page(epoch, noise), content_type="text/html")


def make_due(harness: Harness) -> None:
    """Pretend the re-check time of every followed article has come."""
    import sqlite3

    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("UPDATE followed_articles SET next_check_at = '2000-01-01 00:00:00.000'")


def article_changes(harness: Harness) -> list[tuple[str, str, str | None]]:
    return [
        (r["kind"], r["key"].rsplit("/", 1)[-1], r["edit"])
        for r in harness.rows(
            "SELECT c.kind, e.key, c.edit FROM changes c JOIN entries e ON e.id = c.entry_id"
            " JOIN sources s ON s.id = c.source_id WHERE s.name = 'world/articles' ORDER BY c.id"
        )
    ]


def test_followed_articles_are_versioned_within_the_limit(harness: Harness) -> None:
    """Linked articles become page entries, at most follow_limit per pass, edits detected."""
    paths = ["/a/1.html", "/a/2.html", "/a/3.html"]
    harness.add("world", "/feed.xml", follow_links=True, follow_limit=2, interval="1h")
    harness.server.serve("/feed.xml", feed(harness, paths))
    for path in paths:
        serve_article(harness, path, 0)
    harness.poll()
    assert sorted(article_changes(harness)) == [("new", "1.html", None), ("new", "2.html", None)]
    harness.poll()  # nothing else due yet except the third article
    assert article_changes(harness)[2:] == [("new", "3.html", None)]
    assert sum(len(harness.server.hits(p)) for p in paths) == 3
    serve_article(harness, "/a/1.html", 1, noise=5)  # noise only
    serve_article(harness, "/a/2.html", 2)  # three paragraphs appended
    make_due(harness)
    harness.poll()
    make_due(harness)
    harness.poll()
    assert article_changes(harness)[3:] == [("changed", "2.html", "appended")]
    [row] = harness.rows("SELECT kind, url FROM sources WHERE name = 'world/articles'")
    assert row["kind"] == "page"


def test_an_item_leaving_the_feed_does_not_remove_its_article(harness: Harness) -> None:
    """Feed-window removals never touch the companion source's articles."""
    harness.add("world", "/feed.xml", follow_links=True, removals="all")
    harness.server.serve("/feed.xml", feed(harness, ["/a/1.html", "/a/2.html"]))
    serve_article(harness, "/a/1.html", 0)
    serve_article(harness, "/a/2.html", 0)
    harness.poll()
    harness.server.serve("/feed.xml", feed(harness, ["/a/2.html"]))
    harness.poll()
    assert [c[0] for c in harness.changes()].count("removed") == 1  # the feed item only
    assert sorted(article_changes(harness)) == [("new", "1.html", None), ("new", "2.html", None)]


def test_a_failing_article_is_recorded_and_backs_off(harness: Harness) -> None:
    """A 404 article is logged in fetches and its next check is pushed back."""
    harness.add("world", "/feed.xml", follow_links=True, interval="10m")
    harness.server.serve("/feed.xml", feed(harness, ["/a/missing.html"]))
    [result] = harness.poll()
    assert result.ok
    [article] = harness.rows("SELECT consecutive_failures, last_error FROM followed_articles")
    assert article["consecutive_failures"] == 1 and "404" in article["last_error"]
    [fetch] = harness.rows(
        "SELECT f.outcome, f.status FROM fetches f JOIN sources s ON s.id = f.source_id"
        " WHERE s.name = 'world/articles'"
    )
    assert fetch == {"outcome": "error", "status": 404}


@pytest.mark.parametrize(
    ("age", "quiet", "failures", "expected"),
    [
        (60, 60, 0, 900),  # young: the feed's interval
        (4 * 3600, 4 * 3600, 0, 3600),  # quiet for 4 h: hourly
        (3 * DAY, 8 * 3600, 0, 7200),  # changed 8 h ago: every 2 h
        (5 * DAY, 5 * DAY, 0, DAY),  # quiet for days: daily
        (MAX_AGE + 1, 60, 0, None),  # too old: stop
        (60, 60, 2, 3600),  # two failures: 4x the delay
    ],
)
def test_recheck_cadence_slows_with_age(
    age: float, quiet: float, failures: int, expected: float | None
) -> None:
    """The re-check delay grows with the time since the last change, capped at a day."""
    assert next_check_delay(age, quiet, 900, failures) == expected
