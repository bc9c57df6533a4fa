"""Reads and writes for followed articles (``follow_links = true`` feeds).

A followed article is an entry of the feed's companion source
``<feed name>/articles`` (kind ``page``), keyed by the article's canonical
URL, with the same ``entries``/``versions``/``changes``/``outbox`` rows as any
entry. Its fetch state and re-check time live in ``followed_articles``, one
row per (feed, article URL). Every function runs on the store's thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aggregator.models import Change, Known, Snapshot
from aggregator.store import FetchRecord, Store
from aggregator.store.rows import PollWriter, known_from_row
from aggregator.timeutil import now_db


def register_links(store: Store, feed_id: int, article_id: int, limit: int = 500) -> int:
    """Start following the links of the feed's current entries; return how many are new.

    Only the ``limit`` most recently seen entries are considered.
    """
    now = now_db()
    cur = store.db.execute(
        "INSERT INTO followed_articles (feed_source_id, article_source_id, url,"
        " first_seen_at, next_check_at)"
        " SELECT ?, ?, url, ?, ? FROM entries WHERE source_id = ? AND removed_at IS NULL"
        " AND (url LIKE 'http://%' OR url LIKE 'https://%')"
        " ORDER BY last_seen_at DESC, position LIMIT ?"
        " ON CONFLICT (feed_source_id, url) DO NOTHING",
        [feed_id, article_id, now, now, feed_id, limit],
    )
    return cur.rowcount


def due_articles(store: Store, feed_id: int, limit: int) -> list[dict[str, Any]]:
    """The articles of ``feed_id`` due for a check, most overdue first."""
    cursor = store.db.execute(
        "SELECT * FROM followed_articles WHERE feed_source_id = ? AND next_check_at IS NOT NULL"
        " AND next_check_at <= ? ORDER BY next_check_at, id LIMIT ?",
        [feed_id, now_db(), limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def known_article(store: Store, article_source_id: int, key: str) -> dict[str, Known]:
    """What is stored for one article entry (empty if never stored)."""
    row = store.db.execute(
        "SELECT e.id, e.key, e.removed_at, e.position, e.published_at, e.version_count,"
        " v.title, v.link, v.author, v.summary_text, v.content_text, v.content_hash"
        " FROM entries e LEFT JOIN versions v ON v.id = e.current_version_id"
        " WHERE e.source_id = ? AND e.key = ?",
        [article_source_id, key],
    ).fetchone()
    return {row[1]: known_from_row(row)} if row else {}


def record_check(
    store: Store,
    article: dict[str, Any],
    fetch: FetchRecord,
    next_check_at: str | None,
    snapshots: Sequence[Snapshot] = (),
    changes: Sequence[Change] = (),
) -> None:
    """Write one article check (fetch log, changes, versions, events, schedule) atomically."""
    source = store.source(article["article_source_id"])
    ok = fetch.outcome != "error"
    with store.db.atomic():
        fetch_id = store._insert_fetch(source["id"], fetch, len(snapshots) or None, len(changes))
        writer = PollWriter(store.db, source, fetch_id, fetch.started_at)
        for change in changes:
            writer.apply(change)
        writer.touch_present(snapshots)
        sets: dict[str, Any] = {
            "last_checked_at": fetch.started_at,
            "next_check_at": next_check_at,
            "consecutive_failures": 0 if ok else article["consecutive_failures"] + 1,
            "last_error": fetch.error,
        }
        if ok:
            sets.update(etag=fetch.etag, last_modified=fetch.last_modified)
            if fetch.body_sha256:
                sets["body_sha256"] = fetch.body_sha256
        if changes:
            sets["last_changed_at"] = fetch.started_at
        assignments = ", ".join(f"{k} = ?" for k in sets)
        store.db.execute(
            f"UPDATE followed_articles SET {assignments} WHERE id = ?",
            [*sets.values(), article["id"]],
        )
        store.db.execute(
            "UPDATE sources SET last_fetch_at = ? WHERE id = ?", [now_db(), source["id"]]
        )
