"""The core pipeline against an evolving story served over real HTTP."""

from __future__ import annotations

import json

import pytest

from tests import story
from tests.conftest import Harness


def serve_epoch(harness: Harness, epoch: int, fmt: str = "rss") -> None:
    if fmt == "rss":
        harness.server.serve("/feed.xml", story.rss(epoch))
    else:
        harness.server.serve("/feed.atom", story.atom(epoch), content_type="application/atom+xml")


@pytest.mark.parametrize(("fmt", "path"), [("rss", "/feed.xml"), ("atom", "/feed.atom")])
def test_story_epochs_produce_exactly_the_expected_changes(
    harness: Harness, fmt: str, path: str
) -> None:
    """Each epoch of the story yields exactly its changes, and noise yields none."""
    harness.add("world", path)
    expected = [
        [("new", "talks", "[]"), ("new", "corridors", "[]"), ("new", "markets", "[]")],
        [
            ("new", "hospital", "[]"),
            ("changed", "talks", '["title"]'),
            ("changed", "corridors", '["content"]' if fmt == "atom" else '["summary"]'),
        ],
        [
            ("changed", "talks", '["content"]' if fmt == "atom" else '["summary"]'),
            ("removed", "corridors", "[]"),
        ],
        [("restored", "corridors", "[]")],
        [],
    ]
    seen = 0
    for epoch, want in enumerate(expected):
        serve_epoch(harness, epoch, fmt)
        [result] = harness.poll()
        assert result.ok, result.error
        got = [(k, key.rsplit(":", 1)[-1], f) for k, key, f in harness.changes()[seen:]]
        assert got == want, f"epoch {epoch}"
        seen += len(want)


def test_versions_hold_every_headline_and_the_edit_kind(harness: Harness) -> None:
    """versions keep each distinct state; changes say appended vs edited."""
    harness.add("world", "/feed.xml")
    for epoch in range(3):
        serve_epoch(harness, epoch)
        harness.poll()
    titles = harness.rows(
        "SELECT v.version, v.title FROM versions v JOIN entries e ON e.id = v.entry_id"
        " WHERE e.key = 'talks' ORDER BY v.version"
    )
    assert [(r["version"], r["title"]) for r in titles] == [
        (1, story.TALKS.title),
        (2, story.TALKS_1.title),
        (3, story.TALKS_1.title),
    ]
    edits = harness.rows(
        "SELECT e.key, c.edit FROM changes c JOIN entries e ON e.id = c.entry_id"
        " WHERE c.kind = 'changed' ORDER BY c.id"
    )
    assert [(r["key"], r["edit"]) for r in edits] == [
        ("talks", None),
        ("corridors", "appended"),
        ("talks", "appended"),  # words inserted into a sentence, none removed
    ]
    markets = harness.rows("SELECT version_count, url FROM entries WHERE key = 'markets'")
    assert markets == [{"version_count": 1, "url": f"{story.BASE}/markets"}]


def test_unchanged_bodies_cost_no_parse_and_304s_are_used(harness: Harness) -> None:
    """A repeated body is answered 304 or recognised by hash; no version is written."""
    harness.add("world", "/feed.xml")
    serve_epoch(harness, 0)
    harness.poll()
    [second] = harness.poll()
    assert second.outcome == "not_modified"
    assert harness.server.hits("/feed.xml")[-1].headers.get("If-None-Match")
    harness.server.serve("/feed.xml", story.rss(0), validators=False)
    [third] = harness.poll()
    [fourth] = harness.poll()
    assert (third.outcome, fourth.outcome) == ("same_body", "same_body")
    outcomes = [r["outcome"] for r in harness.rows("SELECT outcome FROM fetches ORDER BY id")]
    assert outcomes == ["changed", "not_modified", "same_body", "same_body"]
    assert harness.rows("SELECT count(*) AS n FROM versions") == [{"n": 3}]


def test_a_broken_feed_is_that_sources_failure_only(harness: Harness) -> None:
    """A malformed or non-feed source is recorded as failing; others still update."""
    harness.add("good", "/feed.xml")
    harness.add("html", "/page.html")
    harness.add("missing", "/nothing-here.xml")
    serve_epoch(harness, 0)
    harness.server.serve(
        "/page.html", "<html><body><p>Hello</p></body></html>", content_type="text/html"
    )
    results = {r.source: r for r in harness.poll()}
    assert results["good"].ok and results["good"].counts["new"] == 3
    assert "expected a feed but got an HTML page" in (results["html"].error or "")
    assert results["missing"].status == 404
    failing = harness.rows(
        "SELECT name, consecutive_failures, last_error FROM sources"
        " WHERE consecutive_failures > 0 ORDER BY name"
    )
    assert [r["name"] for r in failing] == ["html", "missing"]
    assert "HTTP 404" in failing[1]["last_error"]


def test_truncated_xml_never_marks_entries_removed(harness: Harness) -> None:
    """A feed cut off mid-document updates what it can but removes nothing."""
    harness.add("world", "/feed.xml")
    serve_epoch(harness, 1)
    harness.poll()
    body = story.rss(1)
    harness.server.serve("/feed.xml", body[: body.index("<item>", body.index("<item>") + 10) + 40])
    [result] = harness.poll()
    assert result.ok
    assert not [c for c in harness.changes() if c[0] == "removed"]


def test_each_change_has_an_outbox_event_in_the_same_transaction(harness: Harness) -> None:
    """Every change row has exactly one outbox event describing it."""
    harness.add("world", "/feed.xml")
    for epoch in range(3):
        serve_epoch(harness, epoch)
        harness.poll()
    rows = harness.rows(
        "SELECT c.id, c.kind, o.payload FROM changes c JOIN outbox o ON o.change_id = c.id"
        " ORDER BY c.id"
    )
    assert len(rows) == len(harness.changes())
    retitle = next(
        json.loads(r["payload"])
        for r in rows
        if '"title"' in r["payload"] and r["kind"] == "changed"
    )
    assert retitle["title"] == {"before": story.TALKS.title, "after": story.TALKS_1.title}
    assert retitle["version"] == {"before": 1, "after": 2}
    assert retitle["source"]["name"] == "world"
    assert "{+" in retitle["diff"] and "[-" in retitle["diff"]
    markets = next(json.loads(r["payload"]) for r in rows if '"key": "markets"' in r["payload"])
    assert markets["entry"]["url"] == f"{story.BASE}/markets"  # utm_* parameters removed


def test_permanent_redirect_updates_the_polled_url(harness: Harness) -> None:
    """A 301 to a new feed URL is followed and remembered."""
    harness.add("world", "/old.xml")
    serve_epoch(harness, 0)
    harness.server.serve(
        "/old.xml", b"", status=301, headers={"Location": "/feed.xml"}, validators=False
    )
    [result] = harness.poll()
    assert result.ok and result.counts["new"] == 3
    [src] = harness.rows("SELECT url, config_url FROM sources")
    assert src["url"].endswith("/feed.xml") and src["config_url"].endswith("/old.xml")


def test_publisher_ttl_and_skip_hours_survive_polls_that_parse_nothing(harness: Harness) -> None:
    """<ttl>, every <skipHours> hour, <skipDays> and sy:updatePeriod reach the scheduler,
    after 304s too."""
    body = (
        story.rss(0)
        .replace(
            "<lastBuildDate>",
            "<ttl>45</ttl><skipHours><hour>0</hour><hour>1</hour><hour>23</hour></skipHours>"
            "<skipDays><day>Saturday</day><day>Sunday</day><day>Caturday</day></skipDays>"
            "<sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency>"
            "<lastBuildDate>",
        )
        .replace("<rss ", '<rss xmlns:sy="http://purl.org/rss/1.0/modules/syndication/" ')
    )
    harness.add("world", "/feed.xml")
    harness.server.serve("/feed.xml", body)

    async def two_polls() -> list:
        from aggregator.fetch import Fetcher
        from aggregator.pipeline import Pipeline
        from aggregator.sandbox import ParsePool
        from aggregator.store.thread import StoreThread

        config = harness.config()
        store = StoreThread(config.storage.database)
        parsers = ParsePool(config.parse)
        try:
            async with Fetcher(config.fetch) as fetcher:
                pipeline = Pipeline(config, store, fetcher, parsers)
                await pipeline.sync()
                return [await pipeline.poll(config.sources[0]) for _ in range(2)]
        finally:
            parsers.close()
            store.close()

    import asyncio

    first, second = asyncio.run(two_polls())
    assert second.outcome == "not_modified"
    for result in (first, second):
        assert result.ttl_seconds == 45 * 60
        assert result.skip_hours == frozenset({0, 1, 23})
        assert result.hints.skip_days == frozenset({5, 6})
        assert result.hints.update_period == 1800
