"""The web view's reads: keyset-paginated changes, one story, sources, all on one ``Reader``.

Every query is shaped for a large history (1,000,000 versions): lists are keyset-paginated
by id (``id < before ORDER BY id DESC LIMIT n``), never ``OFFSET``; counts come from
``entries.version_count``, not from scanning ``versions``. Rows become the store's own
``ChangeRow``/``VersionRow``, so the digest's model renders them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator.store.queries import (
    _VERSION_COLUMNS,
    ChangeRow,
    EntryRow,
    Reader,
    SearchHit,
    VersionRow,
    _version_of,
)
from aggregator.store.search import newest


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    """Which changes a list, feed or live stream shows (empty: all)."""

    source_ids: tuple[int, ...] = ()
    kind: str = ""
    since: str = ""  # database time; changes detected at or after it
    entry_id: int | None = None

    def matches(self, row: ChangeRow, source_id: int) -> bool:
        """True when ``row`` (of source ``source_id``) passes this filter (``since`` aside)."""
        return (
            (not self.source_ids or source_id in self.source_ids)
            and (not self.kind or row.kind == self.kind)
            and (self.entry_id is None or row.entry_id == self.entry_id)
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry (a story, a live blog's post or its page) with its source."""

    id: int
    source_id: int
    source: str
    source_kind: str
    key: str
    url: str
    title: str
    version_count: int
    first_seen_at: str
    last_seen_at: str
    removed_at: str | None


@dataclass(slots=True)
class StoryData:
    """An entry, its versions' headlines (oldest first) and its latest changes (oldest first)."""

    entry: Entry
    versions: list[VersionRow]  # id, version, title and seen_at only
    changes: list[ChangeRow]
    posts: list[tuple[Entry, list[ChangeRow]]] = field(default_factory=list)
    earlier: int | None = None  # more changes before this change id


def rows(reader: Reader, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts (an SQLite error is a ``StoreError``)."""
    return reader._rows(sql, list(params))


def _marks(values: Sequence[Any]) -> str:
    """``?`` per value; ``NULL`` for none (``IN ()`` is an error on PostgreSQL)."""
    return ",".join("?" * len(values)) or "NULL"


def max_change_id(reader: Reader) -> int:
    """The id of the newest change (0 when there is none): one index lookup."""
    row = reader.db.execute("SELECT max(id) FROM changes").fetchone()
    return int(row[0] or 0)


def source_ids(reader: Reader, names: Iterable[str]) -> dict[str, int]:
    """Source ids by name, for the names that exist."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    found = rows(reader, f"SELECT id, name FROM sources WHERE name IN ({_marks(wanted)})", wanted)
    return {r["name"]: r["id"] for r in found}


def source_names(reader: Reader, limit: int = 200) -> list[str]:
    """The first ``limit`` source names, sorted (for a menu; past that, a text field)."""
    found = rows(reader, "SELECT name FROM sources ORDER BY name LIMIT ?", [limit])
    return [r["name"] for r in found]


def changes(
    reader: Reader, filt: ChangeFilter, *, before: int | None = None, limit: int = 50
) -> list[tuple[ChangeRow, int]]:
    """Up to ``limit`` changes passing ``filt``, newest first, with ids below ``before``.

    Returns ``(change, source id)`` pairs.
    """
    where, params = ["1 = 1"], []
    if before is not None:
        where.append("c.id < ?")
        params.append(before)
    if filt.source_ids:
        where.append(f"c.source_id IN ({_marks(filt.source_ids)})")
        params += list(filt.source_ids)
    if filt.kind:
        where.append("c.kind = ?")
        params.append(filt.kind)
    if filt.since:
        # The window as an id range (ids grow with detected_at), so the newest-first walk by
        # id stays the plan; ``+`` keeps the time index out of it.
        first = reader.db.execute(
            "SELECT id FROM changes WHERE detected_at >= ? ORDER BY detected_at, id LIMIT 1",
            [filt.since],
        ).fetchone()
        if first is None:
            return []
        detected = reader.db.dialect.unindexed.format("c.detected_at")
        where.append(f"c.id >= ? AND {detected} >= ?")
        params += [first[0], filt.since]
    if filt.entry_id is not None:
        where.append("c.entry_id = ?")
        params.append(filt.entry_id)
    found = rows(
        reader,
        f"SELECT c.* FROM changes c WHERE {' AND '.join(where)} ORDER BY c.id DESC LIMIT ?",
        [*params, limit],
    )
    return _change_rows(reader, found)


def changes_after(reader: Reader, after: int, *, limit: int = 200) -> list[tuple[ChangeRow, int]]:
    """The changes with ids above ``after``, oldest first (at most ``limit``)."""
    found = rows(reader, "SELECT * FROM changes WHERE id > ? ORDER BY id LIMIT ?", [after, limit])
    return _change_rows(reader, found)


def _change_rows(reader: Reader, found: list[dict[str, Any]]) -> list[tuple[ChangeRow, int]]:
    """``changes`` rows joined in Python with their entries, sources and versions."""
    if not found:
        return []
    entries = entries_by_id(reader, {r["entry_id"] for r in found})
    ids = {r[k] for r in found for k in ("old_version_id", "new_version_id") if r[k]}
    versions = versions_by_id(reader, ids)
    out = []
    for r in found:
        entry = entries[r["entry_id"]]
        out.append((change_row(r, entry, versions), r["source_id"]))
    return out


def change_row(r: dict[str, Any], entry: Entry, versions: dict[int, VersionRow]) -> ChangeRow:
    """A ``changes`` row as the store's ``ChangeRow`` (the ``change_log`` view's columns)."""
    old, new = versions.get(r["old_version_id"]), versions.get(r["new_version_id"])
    return ChangeRow(
        id=r["id"],
        detected_at=r["detected_at"],
        source=entry.source,
        kind=r["kind"],
        fields=tuple(json.loads(r["fields"] or "[]")),
        edit=r["edit"],
        entry_id=entry.id,
        entry_key=entry.key,
        url=(new.link if new else "") or (old.link if old else "") or entry.url,
        current_title=entry.title,
        old=old,
        new=new,
    )


_ENTRY_SQL = (
    "SELECT e.id, e.source_id, s.name AS source, s.kind AS source_kind, e.key, e.url,"
    " e.title, e.version_count, e.first_seen_at, e.last_seen_at, e.removed_at"
    " FROM entries e JOIN sources s ON s.id = e.source_id"
)


def _entry(r: dict[str, Any]) -> Entry:
    return Entry(**{**r, "url": r["url"] or "", "title": r["title"] or ""})


def entries_by_id(reader: Reader, ids: Iterable[int]) -> dict[int, Entry]:
    """Entries by id."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    found = rows(reader, f"{_ENTRY_SQL} WHERE e.id IN ({_marks(wanted)})", wanted)
    return {r["id"]: _entry(r) for r in found}


def versions_by_id(reader: Reader, ids: Iterable[int]) -> dict[int, VersionRow]:
    """Versions by id."""
    return reader._versions_by_id(set(ids))


def story(
    reader: Reader,
    entry_id: int,
    *,
    before: int | None = None,
    limit: int = 100,
    max_posts: int = 100,
) -> StoryData | None:
    """One entry: every version's headline and time (oldest first), and its ``limit`` latest
    changes with ids below ``before`` (oldest first), their versions in full; a live blog's
    page also gets its posts. ``StoryData.earlier`` is the id to continue from, if any.
    """
    entry = entries_by_id(reader, [entry_id]).get(entry_id)
    if entry is None:
        return None
    timeline = [
        VersionRow(r["id"], entry_id, r["version"], r["title"] or "", "", "", "", "", "", "",
                   r["seen_at"])
        for r in rows(
            reader,
            "SELECT id, version, title, seen_at FROM versions WHERE entry_id = ? ORDER BY version",
            [entry_id],
        )
    ]  # fmt: skip
    where, params = "entry_id = ?", [entry_id]
    if before is not None:
        where += " AND id < ?"
        params.append(before)
    sql = f"SELECT * FROM changes WHERE {where} ORDER BY id DESC LIMIT ?"
    found = rows(reader, sql, [*params, limit + 1])
    earlier = found[limit - 1]["id"] if len(found) > limit else None
    found = list(reversed(found[:limit]))
    ids = {r[k] for r in found for k in ("old_version_id", "new_version_id") if r[k]}
    versions = versions_by_id(reader, ids)
    data = StoryData(entry, timeline, [change_row(r, entry, versions) for r in found])
    data.earlier = earlier
    if entry.source_kind == "liveblog" and entry.key == "page":
        data.posts = _posts(reader, entry, max_posts)
    return data


def _posts(reader: Reader, page: Entry, limit: int) -> list[tuple[Entry, list[ChangeRow]]]:
    """A live blog's posts (newest first), each with its changes (oldest first)."""
    found = rows(
        reader,
        f"{_ENTRY_SQL} WHERE e.source_id = ? AND e.id != ? ORDER BY e.id DESC LIMIT ?",
        [page.source_id, page.id, limit],
    )
    posts = [_entry(r) for r in found]
    if not posts:
        return []
    ids = [p.id for p in posts]
    change_rows = rows(
        reader, f"SELECT * FROM changes WHERE entry_id IN ({_marks(ids)}) ORDER BY id", ids
    )
    version_ids = {r[k] for r in change_rows for k in ("old_version_id", "new_version_id") if r[k]}
    versions = versions_by_id(reader, version_ids)
    by_entry: dict[int, list[ChangeRow]] = {p.id: [] for p in posts}
    entries = {p.id: p for p in posts}
    for r in change_rows:
        by_entry[r["entry_id"]].append(change_row(r, entries[r["entry_id"]], versions))
    return [(p, by_entry[p.id]) for p in posts]


def version_pair(
    reader: Reader, entry_id: int, number: int
) -> tuple[VersionRow | None, VersionRow | None]:
    """Version ``number`` of an entry and the one before it (either may be ``None``)."""
    found = reader._fetch(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE entry_id = ? AND version IN (?, ?)",
        [entry_id, number - 1, number],
    )
    by_number = {v.version: v for v in map(_version_of, found)}
    return by_number.get(number), by_number.get(number - 1)


_SOURCE_COLUMNS = (
    "s.id, s.name, s.kind, s.url, s.config_url, s.title, s.active,"
    " s.interval_seconds, s.interval_now_seconds, s.last_fetch_at, s.last_success_at,"
    " s.last_change_at, s.last_error, s.last_error_at, s.consecutive_failures,"
    " s.next_check_at, s.schedule_reason, s.moved_from, s.moved_at, s.gone_at, s.gone_url,"
    " (SELECT f.status FROM fetches f WHERE f.source_id = s.id"
    "  ORDER BY f.started_at DESC LIMIT 1) AS last_status"
)


def sources(
    reader: Reader, *, after: str = "", limit: int = 100, failing: bool | None = None
) -> list[dict[str, Any]]:
    """Sources by name after ``after`` (keyset), each with its health and its number of
    entries (counted on the index, for these sources only); ``failing``: only the sources
    failing now (``True``) or only the others (``False``).
    """
    where, params = "s.name > ?", [after]
    if failing is not None:
        where += " AND s.consecutive_failures > 0" if failing else " AND s.consecutive_failures = 0"
    found = rows(
        reader,
        f"SELECT {_SOURCE_COLUMNS} FROM sources s WHERE {where} ORDER BY s.name LIMIT ?",
        [*params, limit],
    )
    ids = [r["id"] for r in found]
    counts = {
        r["source_id"]: r["entries"]
        for r in rows(
            reader,
            "SELECT source_id, count(*) AS entries"
            f" FROM entries WHERE source_id IN ({_marks(ids)}) GROUP BY source_id",
            ids,
        )
    }
    for r in found:
        r["entries"] = counts.get(r["id"], 0)
    return found


def search(reader: Reader, text: str, *, limit: int = 50) -> list[SearchHit]:
    """Versions whose title or text match every word of ``text``, newest first.

    Newest first rather than by rank: FTS5 walks its index in rowid order and stops after
    ``limit`` rows, where ranking would score every match (a common word is in a third of
    a million versions).
    """
    found = newest(reader.db, text, limit=limit)
    entries = entries_by_id(reader, {r["entry_id"] for r in found})
    return [
        SearchHit(
            entry=_entry_row(entries[r["entry_id"]]),
            version=r["version"],
            seen_at=r["seen_at"],
            snippet=r["snippet"] or "",
            current=bool(r["current"]),
        )
        for r in found
    ]


def _entry_row(entry: Entry) -> EntryRow:
    return EntryRow(
        entry.id, entry.source, entry.key, entry.url, entry.title, entry.version_count,
        entry.removed_at,
    )  # fmt: skip


def sources_named(reader: Reader, name: str) -> list[dict[str, Any]]:
    """The source called ``name`` (a list of at most one row)."""
    return rows(reader, "SELECT * FROM sources WHERE name = ?", [name])


def source_entries(
    reader: Reader, source_id: int, *, before: int | None = None, limit: int = 50
) -> list[Entry]:
    """A source's entries, newest first seen first, with ids below ``before``."""
    where, params = "e.source_id = ?", [source_id]
    if before is not None:
        where += " AND e.id < ?"
        params.append(before)
    found = rows(reader, f"{_ENTRY_SQL} WHERE {where} ORDER BY e.id DESC LIMIT ?", [*params, limit])
    return [_entry(r) for r in found]


#: A sink whose oldest undelivered event waits longer than this is falling behind.
BEHIND_AFTER = 60.0


def sink_backlogs(reader: Reader) -> list[dict[str, Any]]:
    """Each configured sink's queue, with ``behind`` set when it is falling behind."""
    from aggregator.store.outbox import backlogs
    from aggregator.timeutil import from_db, utcnow

    now = utcnow()
    found = []
    for queue in backlogs(reader.db):
        if not queue.active:
            continue
        waiting = (
            (now - from_db(queue.oldest_pending_at)).total_seconds()
            if (queue.oldest_pending_at)
            else 0.0
        )
        found.append(
            {
                "name": queue.sink, "kind": queue.kind, "pending": queue.pending,
                "in_flight": queue.in_flight, "waiting": max(0.0, waiting),
                "per_second": queue.per_second, "down_until": queue.retry_at,
                "behind": waiting > BEHIND_AFTER or queue.retry_at is not None,
            }
        )  # fmt: skip
    return found
