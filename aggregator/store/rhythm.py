"""What the learned schedule reads back from the history: changes, entry dates, visits.

Plain, portable SQL: ``?`` placeholders, plain SELECTs, no SQLite-only
functions; times are compared as the stored ISO 8601 text and any arithmetic
on them is done by the caller in Python. Each function takes a connection (or
anything with ``.execute(sql, params)`` returning rows), so any node can run
them on a read connection while others write.

Every node computes its sources' rhythms from these rows, so several daemon
nodes sharing one database agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Connection(Protocol):
    """Anything with ``execute(sql, params)`` returning an iterable of rows."""

    def execute(self, sql: str, params: Any = ..., /) -> Any:
        """Run ``sql`` with ``params``."""


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One counted change: a new entry (with its own date, if any) or an edit."""

    source_id: int
    kind: str  # new, changed or restored
    detected_at: str
    published_at: str | None  # the entry's own date (new entries only)
    fetch_id: int | None
    id: int = 0

    @property
    def key(self) -> tuple[str, int]:
        """Where the next page starts (``changes_between``'s ``after``)."""
        return self.detected_at, self.id


@dataclass(frozen=True, slots=True)
class VisitRecord:
    """One source's successful fetches in a span: how many, first and last."""

    source_id: int
    count: int
    first_at: str
    last_at: str


@dataclass(frozen=True, slots=True)
class SourceStart:
    """When a source was added (its history starts there)."""

    source_id: int
    added_at: str


#: Rows per page of ``changes_between``.
PAGE = 2000


def changes_between(
    conn: Connection, start: str, end: str, after: tuple[str, int] | None = None
) -> list[ChangeRecord]:
    """The new entries and edits detected in ``[start, end)``, oldest first, one page.

    Pages of ``PAGE`` rows: pass the last row's ``(detected_at, id)`` as ``after`` for
    the next page (keyset paging on the ``detected_at`` index); a short page is the last.
    """
    last_at, last_id = after if after is not None else (start, 0)
    rows = conn.execute(
        "SELECT c.source_id, c.kind, c.detected_at,"
        " CASE WHEN c.kind = 'new' THEN e.published_at END, c.fetch_id, c.id"
        " FROM changes c JOIN entries e ON e.id = c.entry_id"
        " WHERE c.detected_at >= ? AND c.detected_at < ?"
        " AND (c.detected_at > ? OR c.id > ?)"
        " AND c.kind IN ('new', 'changed', 'restored')"
        " ORDER BY c.detected_at, c.id LIMIT ?",
        [last_at, end, last_at, last_id, PAGE],
    )
    return [ChangeRecord(*row) for row in rows]


def visits_between(conn: Connection, start: str, end: str) -> list[VisitRecord]:
    """Per source, the fetches started in ``[start, end)`` that got an answer (not errors)."""
    rows = conn.execute(
        "SELECT source_id, count(*), min(started_at), max(started_at) FROM fetches"
        " WHERE started_at >= ? AND started_at < ? AND outcome <> 'error'"
        " GROUP BY source_id",
        [start, end],
    )
    return [VisitRecord(*row) for row in rows]


def source_starts(conn: Connection) -> list[SourceStart]:
    """When each active source was added."""
    rows = conn.execute("SELECT id, added_at FROM sources WHERE active = 1", [])
    return [SourceStart(*row) for row in rows]
