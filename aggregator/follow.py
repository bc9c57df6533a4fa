"""``follow_links = true``: also version the articles a feed links to.

After each successful poll of such a feed, the links of its current entries
are registered in ``followed_articles`` and at most ``follow_limit`` articles
that are due are fetched (through the same ``Fetcher``, so the same
concurrency caps, per-host limits, timeouts and conditional GETs apply) and
read like a ``kind = "page"`` source. Each article is an entry of the feed's
companion source ``<feed name>/articles``, keyed by its canonical URL, so a
feed dropping an item never marks its article removed, and article edits
produce the same ``changes`` rows and outbox events as anything else.

Re-check cadence (``next_check_delay``): a quarter of the time since the
article last changed (or was first seen), at least the feed's interval and
at most a day; articles first seen more than ``MAX_AGE`` ago are no longer
checked. Failures back off the same way, doubled per consecutive failure.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any, Protocol

import structlog

from aggregator.config import Config, SourceConfig
from aggregator.detect import detect
from aggregator.errors import FetchError, ParseError
from aggregator.fetch import Fetcher
from aggregator.fetchlog import error_record, fetch_record
from aggregator.sandbox import ParseOutput, ParsePool, ParseTask
from aggregator.store import FetchRecord, SourceSpec
from aggregator.store import articles as store_articles
from aggregator.store.thread import StoreThread
from aggregator.timeutil import from_db, to_db, utcnow

log = structlog.get_logger("aggregator.follow")

DAY = 86400.0
#: Articles first seen longer ago than this are no longer re-checked.
MAX_AGE = 30 * DAY
#: Links registered per feed poll (the feed's newest entries).
REGISTER_LIMIT = 500


class Poller(Protocol):
    """What following needs of the pipeline polling the feed."""

    store: StoreThread
    fetcher: Fetcher
    parsers: ParsePool
    source_ids: dict[str, int]


def companion_name(feed_name: str) -> str:
    """The name of the source holding a feed's followed articles."""
    return f"{feed_name}/articles"


def follows(source: SourceConfig) -> bool:
    """Whether ``source`` is a feed with ``follow_links = true``."""
    return source.kind == "feed" and bool(source.options.get("follow_links"))


def companion_specs(config: Config) -> list[SourceSpec]:
    """Store specs of the companion sources of every following feed."""
    return [
        SourceSpec(companion_name(s.name), "page", s.url, s.interval)
        for s in config.sources
        if follows(s)
    ]


def next_check_delay(age: float, quiet: float, base: float, failures: int = 0) -> float | None:
    """Seconds until an article's next check, or ``None`` to stop checking it.

    Args:
        age: seconds since the article was first seen.
        quiet: seconds since it last changed (or was first seen).
        base: the feed's poll interval, the shortest delay.
        failures: consecutive failed checks (each doubles the delay).
    """
    if age > MAX_AGE:
        return None
    delay = min(max(base, quiet / 4), DAY)
    return min(delay * 2**failures, DAY) if failures else delay


def _next_check_at(
    article: dict[str, Any], base: float, changed: bool, failures: int
) -> str | None:
    now = utcnow()
    first = from_db(article["first_seen_at"])
    last_change = (
        now if changed else from_db(article["last_changed_at"] or article["first_seen_at"])
    )
    delay = next_check_delay(
        (now - first).total_seconds(), (now - last_change).total_seconds(), base, failures
    )
    return None if delay is None else to_db(now + timedelta(seconds=delay))


async def follow_articles(pipeline: Poller, source: SourceConfig) -> Counter[str]:
    """Register the feed's links and check the due articles; return counts of changes."""
    limit = int(source.options.get("follow_limit", 10))
    feed_id = pipeline.source_ids[source.name]
    article_id = pipeline.source_ids[companion_name(source.name)]
    store = pipeline.store
    await store.call(
        store_articles.register_links, store.store, feed_id, article_id, REGISTER_LIMIT
    )
    due = await store.call(store_articles.due_articles, store.store, feed_id, limit)
    counts: Counter[str] = Counter()
    for result in await asyncio.gather(*(_check(pipeline, source, a) for a in due)):
        counts.update(result)
    if due:
        log.info("follow.done", checked=len(due), **dict(counts))
    return counts


async def _check(pipeline: Poller, source: SourceConfig, article: dict[str, Any]) -> list[str]:
    try:
        response = await pipeline.fetcher.fetch(
            article["url"], etag=article["etag"], last_modified=article["last_modified"]
        )
    except FetchError as exc:
        return await _failed(pipeline, source, article, error_record(article["url"], exc))
    record = fetch_record(article["url"], response)
    if response.status == 304 or record.body_sha256 == article["body_sha256"]:
        record.outcome = "not_modified" if response.status == 304 else "same_body"
        record.body_sha256 = None
        when = _next_check_at(article, source.interval, False, 0)
        await pipeline.store.call(
            store_articles.record_check, pipeline.store.store, article, record, when
        )
        return []
    task = ParseTask(
        kind="page",
        body=response.body,
        url=response.final_url,
        headers=response.headers,
        ignore=tuple(source.ignore),
        key=article["url"],
    )
    try:
        output = await pipeline.parsers.parse(task)
    except ParseError as exc:
        record.outcome, record.error, record.body_sha256 = "error", str(exc), None
        return await _failed(pipeline, source, article, record)
    record.parse_ms = output.parse_ms
    for warning in output.warnings:
        log.warning("follow.warning", url=article["url"], warning=warning)
    return await pipeline.store.write(_store, pipeline, source, article, output, record)


async def _failed(
    pipeline: Poller, source: SourceConfig, article: dict[str, Any], record: FetchRecord
) -> list[str]:
    log.warning("follow.failed", url=article["url"], error=record.error)
    failures = article["consecutive_failures"] + 1
    when = _next_check_at(article, source.interval, False, failures)
    await pipeline.store.write(
        store_articles.record_check, pipeline.store.store, article, record, when
    )
    return []


def _store(
    pipeline: Poller,
    source: SourceConfig,
    article: dict[str, Any],
    output: ParseOutput,
    record: FetchRecord,
) -> list[str]:
    """Detect and store one article check; runs on the store's thread."""
    store = pipeline.store.store
    known = store_articles.known_article(store, article["article_source_id"], article["url"])
    changes = detect(known, output.snapshots, removals="never")
    record.outcome = "changed" if changes else "unchanged"
    when = _next_check_at(article, source.interval, bool(changes), 0)
    store_articles.record_check(store, article, record, when, output.snapshots, changes)
    return [c.kind for c in changes]
