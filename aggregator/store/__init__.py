"""The only package that talks to the database (SQLite, or PostgreSQL for several nodes).

``Store`` is a narrow front on a ``Database`` (``store/db.py``): the pipeline asks
it what it knows about a source and hands it one fetch's results, which it
writes in one transaction (fetch log, entries, versions, changes and their
outbox events together), so a kill at any point leaves the database consistent.

A ``Store`` belongs to the thread that opened it (one connection per thread);
the async pipeline runs every call on one writer thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import StoreError
from aggregator.events import source_event
from aggregator.models import Change, Known, Parsed, Snapshot
from aggregator.store.db import SOURCES_LOCK, Conflict, Database, connect, is_postgres, mask
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

__all__ = [
    "Database",
    "FetchRecord",
    "FetchState",
    "LeaseLost",
    "SourceSpec",
    "Store",
    "connect",
    "is_postgres",
    "mask",
    "open_database",
]

#: Unchanged polls (304 / same body) whose log rows wait to be written together.
PENDING_MAX_ROWS = 500
PENDING_MAX_SECONDS = 5.0
#: Times the configured sources are written before a conflict with other nodes is an error.
SYNC_ATTEMPTS = 5


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
    via: str = "poll"  # "push": the body came from a WebSub hub, not a request of ours


@dataclass(frozen=True, slots=True)
class FetchState:
    """What a poll needs to know of its source before fetching (cached by the store)."""

    url: str
    etag: str | None
    last_modified: str | None
    body_sha256: str | None
    consecutive_failures: int


class LeaseLost(StoreError):
    """Another node holds the source now (this node's lease lapsed): nothing was written."""


def open_database(location: str | Path, *, readonly: bool = False) -> Database:
    """Open (and, unless ``readonly``, create) the database at a path or PostgreSQL URL."""
    return connect(location, readonly=readonly)


class Store(DeliveryQueries):
    """Reads and writes the history of every source."""

    def __init__(
        self, db: Database, *, failing_after: int = 3, location: str | Path | None = None
    ) -> None:
        self.db = db
        self.failing_after = failing_after
        #: Where to reconnect to (a URL keeps its password here, never in messages).
        self.location = location
        #: Session state to rebuild on a new connection (temporary tables), by name.
        self.session: dict[str, Callable[[Store], None]] = {}
        # Write-through cache of each source's fetch state; entries are immutable
        # and replaced whole, so any thread may read one (``fetch_state``).
        self._states: dict[int, FetchState] = {}
        self._pending: list[tuple[int, FetchRecord, str]] = []
        self._pending_since = 0.0
        # Planned checks (next_check_at, interval, reason) by source id, written with
        # the batch above; ``plan_check`` may be called from any thread.
        self._plans: dict[int, tuple[str, float, str, int | None]] = {}
        self._plans_lock = threading.Lock()

    @classmethod
    def open(cls, location: str | Path, *, failing_after: int = 3) -> Store:
        """Open the database at ``location`` (path or URL), migrating it forward if needed."""
        db = connect(location)
        try:
            migrate(db)
        except StoreError as exc:
            db.close()
            raise StoreError(f"cannot set up database {mask(location)}: {exc}") from exc
        except Exception as exc:  # sqlite-utils' own migration runner raises the driver's
            db.close()
            raise StoreError(f"cannot set up database {mask(location)}: {exc}") from exc
        return cls(db, failing_after=failing_after, location=location)

    def reconnect(self) -> None:
        """Open a new connection (the server restarted) and rebuild the session's state.

        Raises:
            StoreError: the database still cannot be reached.
        """
        if self.location is None:
            raise StoreError("this store cannot reconnect (opened on a given connection)")
        with contextlib.suppress(Exception):
            self.db.close()
        self.db = connect(self.location)
        for setup in self.session.values():
            setup(self)

    def close(self) -> None:
        """Write pending unchanged-poll rows, then close the connection."""
        self.flush()
        self.db.close()

    # -- sources -----------------------------------------------------------

    def sync_sources(
        self, specs: Iterable[SourceSpec], keep: Collection[str] = ()
    ) -> dict[str, int]:
        """Insert or update configured sources; deactivate the ones no longer configured.

        Args:
            specs: the configured sources.
            keep: names other running nodes are configured with: they stay active.

        Returns:
            The source id of each configured source, by name.
        """
        specs = list(specs)
        for attempt in range(1, SYNC_ATTEMPTS + 1):
            try:
                ids = self._sync_sources(specs, keep)
                break
            except Conflict:  # another node's write crossed ours (PostgreSQL): again
                if attempt == SYNC_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
        self.load_fetch_states()
        return ids

    def _sync_sources(self, specs: list[SourceSpec], keep: Collection[str]) -> dict[str, int]:
        ids: dict[str, int] = {}
        now = now_db()
        with self.db.atomic():
            if self.db.is_postgres:  # nodes starting together: one inserts, the others see it
                self.db.execute("SELECT pg_advisory_xact_lock(?)", [SOURCES_LOCK])
            for spec in specs:
                ids[spec.name] = self._upsert_source(spec, now)
            wanted = set(ids) | set(keep)
            rows = self.db.execute("SELECT id, name FROM sources WHERE active = 1").fetchall()
            gone = [(row[0],) for row in rows if row[1] not in wanted]
            self.db.executemany("UPDATE sources SET active = 0 WHERE id = ?", gone)
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

    def remember_state(self, source_id: int, state: FetchState) -> None:
        """Refresh the cache from the database's row (another node may have polled it)."""
        self._states[source_id] = state

    def _upsert_source(self, spec: SourceSpec, now: str) -> int:
        row = self.db.execute(
            "SELECT id, config_url, url, kind, interval_seconds, active, host FROM sources"
            " WHERE name = ?",
            [spec.name],
        ).fetchone()
        if row is None:
            cur = self.db.execute(
                "INSERT INTO sources (name, kind, url, config_url, interval_seconds, added_at,"
                " host) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [
                    spec.name, spec.kind, spec.url, spec.url, spec.interval_seconds, now,
                    host_of(spec.url),
                ],
            )  # fmt: skip
            return int(cur.fetchone()[0])
        source_id, config_url, url = row[:3]
        if config_url != spec.url:  # the user pointed the source elsewhere: start afresh
            url = spec.url
            self.db.execute(
                "UPDATE sources SET url = ?, config_url = ?, etag = NULL, last_modified = NULL,"
                " body_sha256 = NULL WHERE id = ?",
                [spec.url, spec.url, source_id],
            )
        if tuple(row[3:]) == (spec.kind, spec.interval_seconds, 1, host_of(url)):
            return int(source_id)  # unchanged: its row is not locked (other nodes poll it)
        self.db.execute(
            "UPDATE sources SET kind = ?, interval_seconds = ?, active = 1, host = ? WHERE id = ?",
            [spec.kind, spec.interval_seconds, host_of(url), source_id],
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

    def record_unchanged(
        self, source_id: int, fetch: FetchRecord, claim: int | None = None
    ) -> None:
        """Log a 304 or same-body poll; its bookkeeping rows are written in batches.

        Only the ``fetches`` row and the source's ``last_fetch_at``/validators wait
        (at most ``PENDING_MAX_ROWS`` rows or ``PENDING_MAX_SECONDS``; written at
        the next other write and on ``close``): a kill -9 loses at most those log
        rows, never a version, change or event. A poll that must also emit an event
        (recovery after failures) or follows a move is written at once.
        """
        state = self._states.get(source_id)
        if state is None or state.consecutive_failures or fetch.moved_to:
            self.record_fetch(source_id, fetch, claim)
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

    def plan_check(
        self,
        source_id: int,
        next_check_at: str,
        interval: float,
        reason: str,
        claim: int | None = None,
    ) -> None:
        """Remember the source's next planned check; written with the next batch (any thread).

        ``claim`` is the claim the poll ran under: the plan then also releases it,
        and is dropped if the claim no longer holds. A kill -9 can lose the latest
        plan: the source is due again when its lease lapses.
        """
        with self._plans_lock:
            self._plans[source_id] = (next_check_at, interval, reason, claim)

    def has_plans(self) -> bool:
        """Whether planned checks wait to be written (any thread)."""
        return bool(self._plans)

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
        try:
            self._write_batch(pending, plans)
        except Exception:  # keep them for the next flush (the database may be back by then)
            with self._plans_lock:
                self._plans = {**plans, **self._plans}
            self._pending = pending + self._pending
            raise

    def _write_batch(
        self,
        pending: list[tuple[int, FetchRecord, str]],
        plans: dict[int, tuple[str, float, str, int | None]],
    ) -> None:
        with self.db.atomic():
            self.db.executemany(INSERT_FETCH, [_fetch_row(i, f, None, 0) for i, f, _ in pending])
            self.db.executemany(
                "UPDATE sources SET last_fetch_at = ?, last_success_at = ?, etag = ?,"
                " last_modified = ? WHERE id = ?",
                [(at, at, f.etag, f.last_modified, i) for i, f, at in pending],
            )
            self._write_plans(plans)

    def _write_plans(self, plans: dict[int, tuple[str, float, str, int | None]]) -> None:
        """Write planned checks; a claimed source's plan also ends its claim.

        A plan made under a claim is written only if that claim still holds it
        (its lease may have lapsed and another node taken the source since).
        """
        free = [(*p[:3], i) for i, p in plans.items() if p[3] is None]
        held = [(*p[:3], i, p[3]) for i, p in plans.items() if p[3] is not None]
        self.db.executemany(
            "UPDATE sources SET next_check_at = ?, interval_now_seconds = ?,"
            " schedule_reason = ? WHERE id = ?",
            free,
        )
        self.db.executemany(
            "UPDATE sources SET next_check_at = ?, interval_now_seconds = ?,"
            " schedule_reason = ?, claimed_by = NULL WHERE id = ? AND claim = ?",
            held,
        )

    def record_fetch(self, source_id: int, fetch: FetchRecord, claim: int | None = None) -> int:
        """Log a fetch that produced no parse (304, same body, or an error).

        Raises:
            LeaseLost: ``claim`` no longer holds the source; nothing was written.
        """
        self.flush()
        with self.db.atomic():
            self._hold(source_id, claim)
            fetch_id = self._insert_fetch(source_id, fetch, entries=None, changes=0)
            self._update_source(source_id, fetch, title=None, changed=False)
        return fetch_id

    def hold(self, source_id: int, claim: int | None) -> None:
        """Lock the source's row for the caller's transaction (a poll's claim checked).

        Run before reading what is known of the source, so a pushed body and a poll
        of the same source (on any node) are detected and written one after the other.

        Raises:
            LeaseLost: ``claim`` no longer holds the source.
        """
        if claim is not None:
            self._hold(source_id, claim)
        elif self.db.is_postgres:  # SQLite: the one writer thread already orders them
            self.db.execute("UPDATE sources SET claim = claim WHERE id = ?", [source_id])

    def _hold(self, source_id: int, claim: int | None) -> None:
        """Check (and on PostgreSQL lock) that ``claim`` still holds the source."""
        if claim is None:
            return
        cur = self.db.execute(
            "UPDATE sources SET claim = claim WHERE id = ? AND claim = ?", [source_id, claim]
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"source {source_id}: claim {claim} lapsed; another node has it")

    def record_poll(
        self,
        source_id: int,
        fetch: FetchRecord,
        parsed: Parsed,
        snapshots: Sequence[Snapshot],
        changes: Sequence[Change],
        claim: int | None = None,
    ) -> list[int]:
        """Write one parsed fetch: its log row, every change, version and outbox event.

        All of it is one transaction. The source's first successful listing is its
        baseline: its changes are stored and marked ``baseline``, and their events
        go to no sink unless it asks for them. Returns the ids of the ``changes`` rows.

        Raises:
            LeaseLost: ``claim`` no longer holds the source; nothing was written.
        """
        self.flush()
        with self.db.atomic():
            self._hold(source_id, claim)
            source = self.source(source_id)
            fetch_id = self._insert_fetch(source_id, fetch, len(snapshots), len(changes))
            positions = {s.item.key: i for i, s in enumerate(snapshots)}
            baseline = source["first_listing_at"] is None
            writer = PollWriter(
                self.db, source, fetch_id, fetch.started_at, positions, baseline=baseline
            )
            ids = [writer.apply(change) for change in changes]
            writer.touch_present(snapshots)
            self._update_source(
                source_id, fetch, title=parsed.title, changed=bool(changes), before=source
            )
            if baseline:
                self.db.execute(
                    "UPDATE sources SET first_listing_at = ? WHERE id = ?",
                    [fetch.started_at, source_id],
                )
        return ids

    def _insert_fetch(
        self, source_id: int, fetch: FetchRecord, entries: int | None, changes: int
    ) -> int:
        cur = self.db.execute(
            INSERT_FETCH + " RETURNING id", _fetch_row(source_id, fetch, entries, changes)
        )
        return int(cur.fetchone()[0])

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
            sets["host"] = host_of(fetch.moved_to)
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
        changes, fetch.queued_ms, fetch.parse_ms, fetch.via,
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


def host_of(url: str) -> str:
    """The host part of ``url`` (lower case), as the per-host cap counts it."""
    return (urlsplit(url).hostname or "").lower()
