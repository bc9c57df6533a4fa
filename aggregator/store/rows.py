"""Row-level writes shared by the store's modules: one poll's changes, outbox events.

Everything here runs inside the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.events import change_event
from aggregator.models import Change, Known, Snapshot
from aggregator.store.db import Database


class PollWriter:
    """Applies one poll's changes inside the caller's transaction."""

    def __init__(
        self,
        db: Database,
        source: dict[str, Any],
        fetch_id: int,
        at: str,
        positions: Mapping[str, int] | None = None,
        *,
        baseline: bool = False,
    ) -> None:
        self.db = db
        #: This poll is the source's first listing: its changes are stored, not announced.
        self.baseline = baseline
        self.source = source
        self.fetch_id = fetch_id
        self.at = at
        self.entry_ids: dict[str, int] = {}
        #: Each listed entry's position in the response; a new entry is inserted with it.
        self.positions = positions or {}
        self.inserted: set[str] = set()

    def apply(self, change: Change) -> int:
        keys: tuple[str | None, str | None] = (None, None)
        if change.kind == "new":
            entry_id = self._insert_entry(change)
            old, new = None, self._insert_version(entry_id, 1, change)
            numbers: tuple[int | None, int | None] = (None, 1)
        else:
            assert change.previous is not None
            entry_id = change.previous.entry_id
            if change.kind == "moved":
                keys = (change.previous.key, change.key)
                self._rekey(entry_id, change)
            old, new, numbers = self._update_entry(entry_id, change)
        self.entry_ids[change.key] = entry_id
        cur = self.db.execute(
            "INSERT INTO changes (source_id, entry_id, kind, fields, edit, old_version_id,"
            " new_version_id, detected_at, fetch_id, old_key, new_key, baseline)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                self.source["id"], entry_id, change.kind, json.dumps(list(change.fields)),
                change.edit, old, new, self.at, self.fetch_id, *keys, int(self.baseline),
            ],
        )  # fmt: skip
        change_id = int(cur.fetchone()[0])
        payload = change_event(
            change,
            source=source_ref(self.source),
            entry_id=entry_id,
            versions=numbers,
            detected_at=self.at,
        )
        if self.baseline:
            payload["baseline"] = True
        insert_outbox(
            self.db, payload, self.source["id"], entry_id, change_id, self.at,
            baseline=self.baseline,
        )  # fmt: skip
        return change_id

    def _insert_entry(self, change: Change) -> int:
        snap = change.snapshot
        assert snap is not None
        cur = self.db.execute(
            "INSERT INTO entries (source_id, key, url, title, published_at, first_seen_at,"
            " last_seen_at, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                self.source["id"], change.key, snap.texts["link"], snap.texts["title"],
                snap.item.published, self.at, self.at, self.positions.get(change.key),
            ],
        )  # fmt: skip
        self.inserted.add(change.key)
        entry_id = int(cur.fetchone()[0])
        self._add_key(entry_id, change.key, snap.texts["link"])
        return entry_id

    def _rekey(self, entry_id: int, change: Change) -> None:
        """Make ``change.key`` the entry's key; its old key stays in ``entry_keys``."""
        assert change.previous is not None and change.snapshot is not None
        self.db.execute(
            "UPDATE entry_keys SET replaced_at = ?, url = ? WHERE source_id = ? AND key = ?",
            [self.at, change.previous.texts.get("link") or None, self.source["id"],
             change.previous.key],
        )  # fmt: skip
        self.db.execute("UPDATE entries SET key = ? WHERE id = ?", [change.key, entry_id])
        self._add_key(entry_id, change.key, change.snapshot.texts["link"])

    def _add_key(self, entry_id: int, key: str, url: str) -> None:
        """Record ``key`` as the entry's current key (taking it over if another entry had it)."""
        self.db.execute(
            "INSERT INTO entry_keys (entry_id, source_id, key, url, first_seen_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source_id, key) DO UPDATE SET"
            " first_seen_at = CASE WHEN entry_keys.entry_id = excluded.entry_id"
            " THEN entry_keys.first_seen_at ELSE excluded.first_seen_at END,"
            " entry_id = excluded.entry_id, url = excluded.url, replaced_at = NULL",
            [entry_id, self.source["id"], key, url or None, self.at],
        )

    def _update_entry(
        self, entry_id: int, change: Change
    ) -> tuple[int | None, int | None, tuple[int | None, int | None]]:
        row = self.db.execute(
            "SELECT current_version_id, version_count FROM entries WHERE id = ?", [entry_id]
        ).fetchone()
        old_id, count = row[0], row[1]
        if change.kind == "removed":
            self.db.execute("UPDATE entries SET removed_at = ? WHERE id = ?", [self.at, entry_id])
            return old_id, None, (count, None)
        if change.kind == "restored":
            self.db.execute("UPDATE entries SET removed_at = NULL WHERE id = ?", [entry_id])
        if change.kind in ("restored", "moved") and not set(change.fields) - {"key"}:
            return old_id, old_id, (count, count)
        new_id = self._insert_version(entry_id, count + 1, change)
        return old_id, new_id, (count, count + 1)

    def _insert_version(self, entry_id: int, number: int, change: Change) -> int:
        snap = change.snapshot
        assert snap is not None
        item, texts = snap.item, snap.texts
        # a summary identical to the content is stored once (NULL summary; migration 0009)
        summary = None if item.content and item.summary == item.content else item.summary
        cur = self.db.execute(
            "INSERT INTO versions (entry_id, version, title, link, author, summary, content,"
            " summary_text, content_text, published_at, updated_at, content_hash, seen_at,"
            " fetch_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                entry_id, number, texts["title"], texts["link"], texts["author"], summary,
                item.content, texts["summary"], texts["content"], item.published, item.updated,
                snap.content_hash, self.at, self.fetch_id,
            ],
        )  # fmt: skip
        version_id = int(cur.fetchone()[0])
        self.db.execute(
            "UPDATE entries SET current_version_id = ?, version_count = ?, title = ?, url = ?,"
            " published_at = COALESCE(?, published_at) WHERE id = ?",
            [version_id, number, texts["title"], texts["link"], item.published, entry_id],
        )
        return version_id

    def touch_present(self, snapshots: Sequence[Snapshot]) -> None:
        """Record when and where each listed entry was last seen (new ones were, at insert)."""
        fresh = self.inserted if self.positions else set()
        self.db.executemany(
            "UPDATE entries SET last_seen_at = ?, position = ? WHERE source_id = ? AND key = ?",
            [
                (self.at, i, self.source["id"], s.item.key)
                for i, s in enumerate(snapshots)
                if s.item.key not in fresh
            ],
        )


INSERT_FETCH = (
    "INSERT INTO fetches (source_id, started_at, url, final_url, status, outcome, bytes,"
    " duration_ms, etag, last_modified, error, entries, changes, queued_ms, parse_ms, via)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def known_from_row(
    row: tuple[Any, ...], *, last_seen: str | None = None, aliases: tuple[str, ...] = ()
) -> Known:
    """A ``Known`` from the ``Store.known`` query's row (its first 12 columns)."""
    entry_id, key, removed_at, position, published, count = row[:6]
    title, link, author, summary, content, content_hash = row[6:12]
    texts = {
        "title": title or "",
        "link": link or "",
        "author": author or "",
        "summary": summary or "",
        "content": content or "",
    }
    return Known(
        entry_id=entry_id,
        key=key,
        texts=texts,
        content_hash=content_hash or "",
        version=count,
        removed=removed_at is not None,
        position=position,
        published=published,
        last_seen=last_seen,
        aliases=aliases,
    )


def source_ref(source: dict[str, Any]) -> dict[str, Any]:
    return {"name": source["name"], "url": source["url"], "kind": source["kind"]}


def insert_outbox(
    db: Database,
    payload: dict[str, Any],
    source_id: int | None,
    entry_id: int | None,
    change_id: int | None,
    at: str,
    *,
    baseline: bool = False,
) -> None:
    """Write one event to the outbox (in the caller's transaction) and note it for the worker.

    ``baseline``: the event is part of a source's first listing (sent only to the
    sinks that ask for it).
    """
    db.add_outbox(
        (
            payload["id"], payload["type"], source_id, entry_id, change_id,
            json.dumps(payload, ensure_ascii=False), at, int(baseline),
        )
    )  # fmt: skip
