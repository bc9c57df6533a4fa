"""The only package that talks to SQLite.

``Store`` is a narrow front on a sqlite-utils ``Database``: the pipeline asks it
what it knows about a source and hands it one fetch's results, which it writes
in one transaction (fetch log, entries, versions, changes and their outbox
events together), so a kill at any point leaves the database consistent.

A ``Store`` belongs to the thread that opened it (sqlite3 connections are per
thread); the async pipeline runs every call on one writer thread.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from aggregator.errors import StoreError
from aggregator.events import source_event
from aggregator.models import Change, Known, Parsed, Snapshot
from aggregator.store.outbox import DeliveryQueries
from aggregator.store.rows import (
    INSERT_FETCH,
    PollWriter,
    insert_outbox,
    known_from_row,
    source_ref,
)
from aggregator.store.schema import migrate
from aggregator.timeutil import now_db

__all__ = ["FetchRecord", "FetchState", "SourceSpec", "Store", "open_database"]

#: Unchanged polls (304 / same body) whose log rows wait to be written together.
PENDING_MAX_ROWS = 500
PENDING_MAX_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What the store needs of a configured source."""

    name: str
    kind: str
    url: str
    interval_seconds: float


@dataclass(slots=True)
class FetchRecord:
    """One HTTP attempt, as logged in ``fetches``."""

    url: str
    started_at: str
    outcome: str
    final_url: str | None = None
    status: int | None = None
    bytes: int | None = None
    duration_ms: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    body_sha256: str | None = None
    moved_to: str | None = None  # new URL after a permanent redirect
    queued_ms: int | None = None  # wait for a concurrency slot before started_at
    parse_ms: int | None = None  # parsing and normalising the body


@dataclass(frozen=True, slots=True)
class FetchState:
    """What a poll needs to know of its source before fetching (cached by the store)."""

    url: str
    etag: str | None
    last_modified: str | None
    body_sha256: str | None
    consecutive_failures: int


def open_database(path: str | Path, *, readonly: bool = False) -> Database:
    """Open (and create) the database with WAL, foreign keys and a busy timeout."""
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=30)
            db = Database(conn)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = Database(sqlite3.connect(str(path), timeout=30))
            db.enable_wal()
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            db.execute("PRAGMA synchronous = NORMAL")
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    return db


class Store(DeliveryQueries):
    """Reads and writes the history of every source."""

    def __init__(self, db: Database, *, failing_after: int = 3) -> None:
        self.db = db
        self.failing_after = failing_after
        # Write-through cache of each source's fetch state; entries are immutable
        # and replaced whole, so any thread may read one (``fetch_state``).
        self._states: dict[int, FetchState] = {}
        self._pending: list[tuple[int, FetchRecord, str]] = []
        self._pending_since = 0.0
        # Planned checks (next_check_at, interval, reason) by source id, written with
        # the batch above; ``plan_check`` may be called from any thread.
        self._plans: dict[int, tuple[str, float, str]] = {}
        self._plans_lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, *, failing_after: int = 3) -> Store:
        """Open the database at ``path``, migrating it forward if needed."""
        db = open_database(path)
        try:
            migrate(db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot set up database {path}: {exc}") from exc
        return cls(db, failing_after=failing_after)

    def close(self) -> None:
        """Write pending unchanged-poll rows, then close the connection."""
        self.flush()
        self.db.close()

    # -- sources -----------------------------------------------------------

    def sync_sources(self, specs: Iterable[SourceSpec]) -> dict[str, int]:
        """Insert or update configured sources; deactivate the ones no longer configured.

        Returns:
            The source id of each configured source, by name.
        """
        ids: dict[str, int] = {}
        now = now_db()
        with self.db.atomic():
            for spec in specs:
                ids[spec.name] = self._upsert_source(spec, now)
            names = list(ids) or [""]
            marks = ",".join("?" * len(names))
            self.db.execute(f"UPDATE sources SET active = 0 WHERE name NOT IN ({marks})", names)
        self.load_fetch_states()
        return ids

    def load_fetch_states(self) -> None:
        """Read every source's fetch state into the cache (one query)."""
        self.flush()
        rows = self.db.execute(
            "SELECT id, url, etag, last_modified, body_sha256, consecutive_failures FROM sources"
        ).fetchall()
        self._states = {row[0]: FetchState(*row[1:]) for row in rows}

    def fetch_state(self, source_id: int) -> FetchState | None:
        """The cached fetch state of ``source_id`` (``None`` if not loaded); any thread."""
        return self._states.get(source_id)

    def _upsert_source(self, spec: SourceSpec, now: str) -> int:
        row = self.db.execute(
            "SELECT id, config_url FROM sources WHERE name = ?", [spec.name]
        ).fetchone()
        if row is None:
            cur = self.db.execute(
                "INSERT INTO sources (name, kind, url, config_url, interval_seconds, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [spec.name, spec.kind, spec.url, spec.url, spec.interval_seconds, now],
            )
            return int(cur.lastrowid or 0)
        source_id, config_url = row
        if config_url != spec.url:  # the user pointed the source elsewhere: start afresh
            self.db.execute(
                "UPDATE sources SET url = ?, config_url = ?, etag = NULL, last_modified = NULL,"
                " body_sha256 = NULL WHERE id = ?",
                [spec.url, spec.url, source_id],
            )
        self.db.execute(
            "UPDATE sources SET kind = ?, interval_seconds = ?, active = 1 WHERE id = ?",
            [spec.kind, spec.interval_seconds, source_id],
        )
        return int(source_id)

    def source(self, source_id: int) -> dict[str, Any]:
        """The ``sources`` row of ``source_id``."""
        cur = self.db.execute("SELECT * FROM sources WHERE id = ?", [source_id])
        row = cur.fetchone()
        if row is None:
            raise StoreError(f"no source with id {source_id}")
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    def known(self, source_id: int) -> dict[str, Known]:
        """What is stored for each entry of the source, keyed by its current entry key."""
        rows = self.db.execute(
            "SELECT e.id, e.key, e.removed_at, e.position, e.published_at, e.version_count,"
            " v.title, v.link, v.author, v.summary_text, v.content_text, v.content_hash,"
            " e.last_seen_at FROM entries e LEFT JOIN versions v ON v.id = e.current_version_id"
            " WHERE e.source_id = ?",
            [source_id],
        ).fetchall()
        aliases = self.aliases(source_id)
        return {
            row[1]: known_from_row(row, last_seen=row[12], aliases=aliases.get(row[0], ()))
            for row in rows
        }

    def aliases(self, source_id: int) -> dict[int, tuple[str, ...]]:
        """The keys a rekey replaced, by entry id, oldest first (``entry_keys``)."""
        found: dict[int, tuple[str, ...]] = {}
        for entry_id, key in self.db.execute(
            "SELECT entry_id, key FROM entry_keys WHERE source_id = ? AND replaced_at IS NOT NULL"
            " ORDER BY first_seen_at, id",
            [source_id],
        ):
            found[entry_id] = (*found.get(entry_id, ()), key)
        return found

    # -- writes ------------------------------------------------------------

    def record_unchanged(self, source_id: int, fetch: FetchRecord) -> None:
        """Log a 304 or same-body poll; its bookkeeping rows are written in batches.

        Only the ``fetches`` row and the source's ``last_fetch_at``/validators wait
        (at most ``PENDING_MAX_ROWS`` rows or ``PENDING_MAX_SECONDS``; written at
        the next other write and on ``close``): a kill -9 loses at most those log
        rows, never a version, change or event. A poll that must also emit an event
        (recovery after failures) or follows a move is written at once.
        """
        state = self._states.get(source_id)
        if state is None or state.consecutive_failures or fetch.moved_to:
            self.record_fetch(source_id, fetch)
            return
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((source_id, fetch, now_db()))
        self._states[source_id] = _next_state(state, fetch)
        if (
            len(self._pending) >= PENDING_MAX_ROWS
            or time.monotonic() - self._pending_since > PENDING_MAX_SECONDS
        ):
            self.flush()

    def plan_check(self, source_id: int, next_check_at: str, interval: float, reason: str) -> None:
        """Remember the source's next planned check; written with the next batch (any thread).

        A kill -9 can lose the latest plan (start-up spreads overdue sources anyway).
        """
        with self._plans_lock:
            self._plans[source_id] = (next_check_at, interval, reason)

    def drop_plan(self, source_id: int) -> None:
        """Forget a planned check that was not written yet (any thread)."""
        with self._plans_lock:
            self._plans.pop(source_id, None)

    def flush(self) -> None:
        """Write the pending unchanged-poll rows and planned checks in one transaction."""
        with self._plans_lock:
            plans, self._plans = self._plans, {}
        if not self._pending and not plans:
            return
        pending, self._pending = self._pending, []
        with self.db.atomic():
            self.db.conn.executemany(
                INSERT_FETCH, [_fetch_row(i, f, None, 0) for i, f, _ in pending]
            )
            self.db.conn.executemany(
                "UPDATE sources SET last_fetch_at = ?, last_success_at = ?, etag = ?,"
                " last_modified = ? WHERE id = ?",
                [(at, at, f.etag, f.last_modified, i) for i, f, at in pending],
            )
            self.db.conn.executemany(
                "UPDATE sources SET next_check_at = ?, interval_now_seconds = ?,"
                " schedule_reason = ? WHERE id = ?",
                [(*plan, i) for i, plan in plans.items()],
            )

    def record_fetch(self, source_id: int, fetch: FetchRecord) -> int:
        """Log a fetch that produced no parse (304, same body, or an error)."""
        self.flush()
        with self.db.atomic():
            fetch_id = self._insert_fetch(source_id, fetch, entries=None, changes=0)
            self._update_source(source_id, fetch, title=None, changed=False)
        return fetch_id

    def record_poll(
        self,
        source_id: int,
        fetch: FetchRecord,
        parsed: Parsed,
        snapshots: Sequence[Snapshot],
        changes: Sequence[Change],
    ) -> list[int]:
        """Write one parsed fetch: its log row, every change, version and outbox event.

        All of it is one transaction. Returns the ids of the ``changes`` rows.
        """
        self.flush()
        with self.db.atomic():
            source = self.source(source_id)
            fetch_id = self._insert_fetch(source_id, fetch, len(snapshots), len(changes))
            positions = {s.item.key: i for i, s in enumerate(snapshots)}
            writer = PollWriter(self.db, source, fetch_id, fetch.started_at, positions)
            ids = [writer.apply(change) for change in changes]
            writer.touch_present(snapshots)
            self._update_source(
                source_id, fetch, title=parsed.title, changed=bool(changes), before=source
            )
        return ids

    def _insert_fetch(
        self, source_id: int, fetch: FetchRecord, entries: int | None, changes: int
    ) -> int:
        cur = self.db.execute(INSERT_FETCH, _fetch_row(source_id, fetch, entries, changes))
        return int(cur.lastrowid or 0)

    def _update_source(
        self,
        source_id: int,
        fetch: FetchRecord,
        *,
        title: str | None,
        changed: bool,
        before: dict[str, Any] | None = None,
    ) -> None:
        """Update the source's row and cache after a fetch; ``before`` is its row, if read."""
        now = now_db()
        before = before if before is not None else self.source(source_id)
        self._states[source_id] = _next_state(FetchState(*_state_columns(before)), fetch)
        if fetch.outcome == "error":
            failures = before["consecutive_failures"] + 1
            self.db.execute(
                "UPDATE sources SET last_fetch_at = ?, last_error = ?, last_error_at = ?,"
                " consecutive_failures = ? WHERE id = ?",
                [now, fetch.error, now, failures, source_id],
            )
            if failures == self.failing_after:
                self._source_event("source.failing", before, failures, fetch.error, now)
            return
        sets = {
            "last_fetch_at": now,
            "last_success_at": now,
            "consecutive_failures": 0,
            "etag": fetch.etag,
            "last_modified": fetch.last_modified,
        }
        if fetch.body_sha256:
            sets["body_sha256"] = fetch.body_sha256
        if fetch.moved_to:
            sets["url"] = fetch.moved_to
        if title:
            sets["title"] = title
        if changed:
            sets["last_change_at"] = now
        assignments = ", ".join(f"{k} = ?" for k in sets)
        self.db.execute(
            f"UPDATE sources SET {assignments} WHERE id = ?", [*sets.values(), source_id]
        )
        if before["consecutive_failures"] >= self.failing_after:
            self._source_event(
                "source.recovered", before, before["consecutive_failures"], None, now
            )

    def _source_event(
        self, kind: str, source: dict[str, Any], failures: int, error: str | None, at: str
    ) -> None:
        payload = source_event(
            kind, source=source_ref(source), failures=failures, error=error, at=at
        )
        insert_outbox(self.db, payload, source["id"], None, None, at)


def _fetch_row(
    source_id: int, fetch: FetchRecord, entries: int | None, changes: int
) -> tuple[Any, ...]:
    return (
        source_id, fetch.started_at, fetch.url, fetch.final_url, fetch.status, fetch.outcome,
        fetch.bytes, fetch.duration_ms, fetch.etag, fetch.last_modified, fetch.error, entries,
        changes, fetch.queued_ms, fetch.parse_ms,
    )  # fmt: skip


def _state_columns(source: dict[str, Any]) -> tuple[Any, ...]:
    names = ("url", "etag", "last_modified", "body_sha256", "consecutive_failures")
    return tuple(source[n] for n in names)


def _next_state(state: FetchState, fetch: FetchRecord) -> FetchState:
    """The fetch state after ``fetch`` was recorded (mirrors ``_update_source``)."""
    if fetch.outcome == "error":
        return dataclasses.replace(state, consecutive_failures=state.consecutive_failures + 1)
    return FetchState(
        url=fetch.moved_to or state.url,
        etag=fetch.etag,
        last_modified=fetch.last_modified,
        body_sha256=fetch.body_sha256 or state.body_sha256,
        consecutive_failures=0,
    )
