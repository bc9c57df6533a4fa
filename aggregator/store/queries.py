"""Read-side queries for the digest and the reading commands.

A ``Reader`` wraps a read-only connection (``open_database(location, readonly=True)``),
so it can run while the daemon writes: readers see the last committed state
without blocking the writer (SQLite's WAL, PostgreSQL's MVCC). The daemon may
also wrap its own writer connection in a ``Reader`` to render a scheduled digest.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.errors import StoreError
from aggregator.store import Database, Store, is_postgres, mask, open_database, search
from aggregator.store.rows import insert_outbox
from aggregator.store.schema import pending
from aggregator.timeutil import now_db

__all__ = [
    "ChangeRow",
    "EntryRow",
    "Reader",
    "SearchHit",
    "VersionRow",
    "enqueue_digest",
]

_VERSION_COLUMNS = (
    "id, entry_id, version, title, link, author, summary, content, summary_text,"
    " content_text, seen_at"
)


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One stored version of an entry."""

    id: int
    entry_id: int
    version: int
    title: str
    link: str
    author: str
    summary: str  # as published (HTML)
    content: str  # as published (HTML)
    summary_text: str
    content_text: str
    seen_at: str


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One entry (story item) with its source."""

    id: int
    source: str
    key: str
    url: str
    title: str
    version_count: int
    removed_at: str | None


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One row of ``change_log`` with the versions before and after."""

    id: int
    detected_at: str
    source: str
    kind: str
    fields: tuple[str, ...]
    edit: str | None
    entry_id: int
    entry_key: str
    url: str
    current_title: str
    old: VersionRow | None
    new: VersionRow | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A version whose text matched a search, with a highlighted snippet."""

    entry: EntryRow
    version: int
    seen_at: str
    snippet: str  # matches wrapped in \x02 ... \x03
    current: bool  # True when this is the entry's current version


#: ``Reader.search`` ranks at most this many matching versions: the newest.
SEARCH_RANKED = 5000

#: ``resolve_entry`` lists at most this many entries when a term matches several.
MATCHES_LISTED = 10


class Reader:
    """Answers the reading commands' questions from one connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, location: str | Path) -> Reader:
        """Open ``location`` read-only, first migrating it forward if it is from an older release.

        Raises:
            StoreError: there is no database there (a read never creates one), or it is
                not an aggregator database.
        """
        postgres = is_postgres(location)
        if not postgres and not Path(location).is_file():
            raise StoreError(
                f"no database at {location}: run `aggregator poll` (or `aggregator demo`)"
                " first, or pass --db PATH"
            )
        db = open_database(location, readonly=True)
        try:
            todo = pending(db)
        except Exception as exc:  # not an SQLite file, or not a database we can read
            db.close()
            raise StoreError(f"{mask(location)} is not an aggregator database: {exc}") from None
        if postgres and "sources" not in db.table_names():
            db.close()
            raise StoreError(
                f"no aggregator database at {mask(location)} (the database is empty):"
                " run `aggregator poll` or `aggregator run` against it first"
            )
        if todo:
            db.close()
            Store.open(location).close()
            db = open_database(location, readonly=True)
        return cls(db)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def _rows(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            return self.db.rows(sql, list(params))
        except StoreError as exc:
            raise StoreError(f"query failed: {exc}") from exc

    def _fetch(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self.db.execute(sql, list(params)).fetchall())
        except StoreError as exc:
            raise StoreError(f"query failed: {exc}") from exc

    # -- changes -------------------------------------------------------------

    def changes(
        self,
        since: str,
        until: str,
        sources: list[str] | None = None,
        *,
        first_listing: bool = False,
    ) -> list[ChangeRow]:
        """Changes detected in ``[since, until)``, oldest first, optionally for some sources.

        The changes of a source's first listing (its baseline) only with ``first_listing``.
        """
        where, params = "c.detected_at >= ? AND c.detected_at < ?", [since, until]
        if not first_listing:
            where += " AND c.baseline = 0"
        if sources:
            where += f" AND s.name IN ({','.join('?' * len(sources))})"
            params += sources
        return self._change_rows(where, params)

    def changes_after(self, change_id: int) -> list[ChangeRow]:
        """Changes with an id above ``change_id`` (the ones stored since), oldest first."""
        return self._change_rows("c.id > ?", [change_id])

    def entry_changes(self, entry_id: int) -> list[ChangeRow]:
        """Every change of one entry, oldest first."""
        return self._change_rows("c.entry_id = ?", [entry_id])

    def _change_rows(self, where: str, params: list[Any]) -> list[ChangeRow]:
        # change_log's rows, read from changes directly: the view joins both versions
        # of each change, which _versions_by_id reads anyway
        rows = self._rows(
            "SELECT c.id, c.detected_at, s.name AS source, c.kind, c.fields, c.edit,"
            " c.entry_id, e.key AS entry_key, e.url AS entry_url, e.title AS current_title,"
            " c.old_version_id, c.new_version_id FROM changes c"
            " JOIN entries e ON e.id = c.entry_id JOIN sources s ON s.id = c.source_id"
            f" WHERE {where} ORDER BY c.id",
            params,
        )
        ids = {r[k] for r in rows for k in ("old_version_id", "new_version_id") if r[k]}
        versions = self._versions_by_id(ids)
        out = []
        for r in rows:
            old, new = versions.get(r["old_version_id"]), versions.get(r["new_version_id"])
            # as change_log's url: the new version's link, else the old's, else the entry's
            link = (new.link if new else "") or (old.link if old else "")
            out.append(
                ChangeRow(
                    id=r["id"],
                    detected_at=r["detected_at"],
                    source=r["source"],
                    kind=r["kind"],
                    fields=tuple(json.loads(r["fields"] or "[]")),
                    edit=r["edit"],
                    entry_id=r["entry_id"],
                    entry_key=r["entry_key"],
                    url=link or r["entry_url"] or "",
                    current_title=r["current_title"] or "",
                    old=old,
                    new=new,
                )
            )
        return out

    def _versions_by_id(self, ids: set[int]) -> dict[int, VersionRow]:
        found: dict[int, VersionRow] = {}
        ordered = sorted(ids)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_VERSION_COLUMNS} FROM versions WHERE id IN ({marks})"
            for row in self.db.execute(sql, chunk).fetchall():
                found[row[0]] = _version_of(row)
        return found

    def activity(self, since: str, until: str, sources: list[str] | None = None) -> dict[str, Any]:
        """How many sources were polled in the window, and which are failing now."""
        # one index probe per source (idx_fetches_source), not every poll of the window:
        # 10,000 sources polled every few minutes log about a million polls a day
        polled_sql = (
            "SELECT count(*) AS n FROM sources s WHERE EXISTS (SELECT 1 FROM fetches f"
            " WHERE f.source_id = s.id AND f.started_at >= ? AND f.started_at < ?)"
        )
        failing_sql = (
            "SELECT name, consecutive_failures AS failures, last_error FROM sources"
            " WHERE active = 1 AND consecutive_failures > 0"
        )
        params: list[Any] = [since, until]
        extra: list[Any] = []
        if sources:
            marks = ",".join("?" * len(sources))
            polled_sql += f" AND s.name IN ({marks})"
            failing_sql += f" AND name IN ({marks})"
            params += sources
            extra = list(sources)
        polled = self._rows(polled_sql, params)[0]["n"]
        failing = self._rows(failing_sql + " ORDER BY name", extra)
        return {"sources_polled": polled, "failing": failing}

    def source_names(self) -> list[str]:
        """Every source's name."""
        return [r["name"] for r in self._rows("SELECT name FROM sources ORDER BY name")]

    # -- entries and versions ------------------------------------------------

    def resolve_entry(self, term: str) -> EntryRow:
        """Find one entry by id, key, URL, source name, key/URL prefix, or a word in a version.

        Raises:
            StoreError: nothing matches, or several entries do (they are listed).
        """
        term = term.strip()
        steps: list[tuple[str, list[Any]]] = []
        if term.isdigit():
            steps.append(("e.id = ?", [int(term)]))
        steps.append(("e.key = ? OR e.url = ?", [term, term]))
        # a key or URL the entry had before it moved (entry_keys)
        alias = "e.id IN (SELECT entry_id FROM entry_keys WHERE key = ? OR url = ?)"
        steps.append((alias, [term, term]))
        steps.append(("s.name = ?", [term]))  # a page source's one entry, or its entries listed
        # The last two steps can match much of a large history (a prefix such as
        # "https://", a common word): each stops at MATCHES_LISTED + 1 entries.
        limit = MATCHES_LISTED + 1
        if term:  # a prefix, as ranges the key and URL indexes answer (case-sensitive)
            upper = term[:-1] + chr(min(ord(term[-1]) + 1, 0x10FFFF))
            steps.append(
                (
                    # one IN over a UNION (an OR of two IN made PostgreSQL scan every entry)
                    "e.id IN (SELECT id FROM (SELECT id FROM entries WHERE key >= ? AND key < ?"
                    " LIMIT ?) AS by_key UNION SELECT id FROM (SELECT id FROM entries"
                    " WHERE url >= ? AND url < ? LIMIT ?) AS by_url)",
                    [term, upper, limit, term, upper, limit],
                )
            )
            with contextlib.suppress(StoreError):  # no word to look for: no such step
                steps.append(search.entries_matching(self.db, term, limit))
        for where, params in steps:
            found = self._entries(where, params)
            if len(found) == 1:
                return found[0]
            if found:
                listed = "\n".join(
                    f"  {e.id}  [{e.source}] {e.title}  ({e.key})" for e in found[:MATCHES_LISTED]
                )
                many = len(found) > MATCHES_LISTED
                count = f"more than {MATCHES_LISTED}" if many else str(len(found))
                more = "\n  …" if many else ""
                raise StoreError(
                    f"{count} entries match {term!r}; give one of these ids:\n{listed}{more}"
                )
        raise StoreError(f"no entry matches {term!r} (try an id, key, URL or a word it contains)")

    def _entries(self, where: str, params: list[Any]) -> list[EntryRow]:
        rows = self._rows(
            "SELECT e.id, s.name AS source, e.key, e.url, e.title, e.version_count,"
            f" e.removed_at FROM entries e JOIN sources s ON s.id = e.source_id WHERE {where}"
            " ORDER BY e.last_seen_at DESC, e.id",
            params,
        )
        return [
            EntryRow(
                id=r["id"],
                source=r["source"],
                key=r["key"],
                url=r["url"] or "",
                title=r["title"] or "",
                version_count=r["version_count"],
                removed_at=r["removed_at"],
            )
            for r in rows
        ]

    def versions(self, entry_id: int) -> list[VersionRow]:
        """Every version of an entry, oldest first."""
        rows = self._fetch(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE entry_id = ? ORDER BY version",
            [entry_id],
        )
        return [_version_of(r) for r in rows]

    # -- search and sources --------------------------------------------------

    def search(self, text: str, *, limit: int = 50) -> list[SearchHit]:
        """Versions whose title or text match ``text`` (all words), best first."""
        return self.search_ranked(text, limit=limit)[0]

    def search_ranked(self, text: str, *, limit: int = 50) -> tuple[list[SearchHit], bool]:
        """``search``, and whether only the newest ``SEARCH_RANKED`` matches were ranked.

        Ranking every version that holds a common word takes seconds in a large history.
        """
        try:
            rows, capped = search.ranked(self.db, text, limit=limit, cap=SEARCH_RANKED)
        except StoreError as exc:
            raise StoreError(str(exc).removeprefix("database error: ")) from exc
        entries = {e.id: e for e in self._entries_by_id({r["entry_id"] for r in rows})}
        hits = [
            SearchHit(
                entry=entries[r["entry_id"]],
                version=r["version"],
                seen_at=r["seen_at"],
                snippet=r["snippet"] or "",
                current=bool(r["current"]),
            )
            for r in rows
        ]
        return hits, capped

    def _entries_by_id(self, ids: set[int]) -> list[EntryRow]:
        if not ids:
            return []
        ordered = sorted(ids)
        return self._entries(f"e.id IN ({','.join('?' * len(ordered))})", ordered)

    def sources(self) -> list[dict[str, Any]]:
        """Each source with its health and how much history it has."""
        return self._rows(
            "SELECT s.name, s.kind, s.url, s.interval_seconds, s.active, s.last_success_at,"
            " s.last_error, s.last_error_at, s.consecutive_failures,"
            " coalesce(n.entries, 0) AS entries, coalesce(n.versions, 0) AS versions"
            # one pass over idx_entries_source_versions; versions from version_count,
            # not by counting the rows of versions
            " FROM sources s LEFT JOIN (SELECT source_id, count(*) AS entries,"
            "  sum(version_count) AS versions FROM entries GROUP BY source_id) n"
            " ON n.source_id = s.id ORDER BY s.name"
        )


def _version_of(row: tuple[Any, ...]) -> VersionRow:
    """A ``VersionRow`` from a row of ``_VERSION_COLUMNS`` (NULL text as "")."""
    return VersionRow(row[0], *("" if v is None else v for v in row[1:]))


def enqueue_digest(db: Database, payload: dict[str, Any]) -> bool:
    """Put a digest event in the outbox for the notification worker, once per event id.

    Args:
        db: the writer's connection (``Store.db``).
        payload: the digest event; its ``id`` makes a repeated enqueue a no-op.

    Returns:
        True when the event was added, False when it was already there.
    """
    with db.atomic():
        exists = db.execute("SELECT 1 FROM outbox WHERE event_id = ?", [payload["id"]]).fetchone()
        if exists:
            return False
        insert_outbox(db, payload, None, None, None, now_db())
    return True
