"""Delivery queues over the ``outbox`` table (mixed into ``Store``), shared by every node.

Each sink has a ``cursor`` (the last ``outbox.id`` it has looked at).
``enqueue_new`` reads the events past the cursor, queues the ones the sink's
filters accept as ``deliveries`` and moves the cursor, in one transaction that
holds the sink's row, so two nodes never queue an event twice.

A delivery is ``pending`` until an attempt succeeds (``delivered``), is refused
for good (``failed``) or a user drops it (``dropped``); every attempt is logged
in ``delivery_attempts``. Each delivery has a **story**: the entry a change is
about, the source of a ``source.*`` event, or the event itself; a sink that
keeps the order in which events were written (jsonl, stdout) puts all of its
deliveries in one story, ``*``.

``claim_deliveries`` is the one way to take work, on one node or many: it
takes, oldest first, due deliveries that are the **head of their story** (no
earlier pending delivery of the same story) and not leased, up to the sink's
concurrency minus what is in flight, and leases them to the node
(``claimed_by``, ``lease_until``). So events of one story go out in version
order, a failing event holds back only its own story, and a delivery is sent by
one node at a time; a node that dies leaves its leases to lapse. The attempt is
recorded only after the receiver answered (``record_attempt``), so a kill
between send and record re-sends the same event (same id) later.

A sink down as a whole (``SINK_DOWN_AFTER`` failed attempts in a row) is backed
off as a whole (``sinks.retry_at``); then one delivery at a time probes it.

A new sink starts with its cursor at the newest event: it receives events
created after it first appeared, not the whole history. Events of a source's
first listing (``outbox.baseline``) are queued only for sinks that ask for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aggregator.timeutil import now_db, to_db, utcnow

if TYPE_CHECKING:
    from aggregator.store.db import Database

STATUSES = ("pending", "delivered", "failed", "dropped")

#: Failed attempts in a row (any story) after which the whole sink is backed off.
SINK_DOWN_AFTER = 3

#: The story of every delivery of a sink that keeps the order events were written in.
IN_ORDER = "*"

_HEAD = (
    "NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.sink_id = d.sink_id"
    " AND p.story = d.story AND p.status = 'pending' AND p.id < d.id)"
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An outbox row: its id, when it was written, the exact JSON text, and whether it is
    part of a source's first listing."""

    id: int
    created_at: str
    raw: str
    baseline: bool = False
    story: str = ""

    @property
    def payload(self) -> dict[str, Any]:
        """The event, decoded."""
        return dict(json.loads(self.raw))


@dataclass(frozen=True, slots=True)
class Queued:
    """What the worker decided for one accepted event."""

    outbox_id: int
    due_at: str
    batch_key: str | None = None
    created_at: str = ""
    story: str = ""


@dataclass(slots=True)
class Delivery:
    """A claimed delivery, with its events' JSON texts (more than one when folded)."""

    id: int
    attempts: int
    next_attempt_at: str | None
    raws: list[str] = field(default_factory=list)
    story: str = ""


@dataclass(frozen=True, slots=True)
class Backlog:
    """One sink's queue, for ``status``, ``outbox`` and the web view."""

    sink: str
    kind: str
    active: bool
    pending: int
    in_flight: int
    oldest_pending_at: str | None
    delivered_last_minute: int
    retry_at: str | None

    @property
    def per_second(self) -> float:
        """Events delivered per second over the last minute."""
        return self.delivered_last_minute / 60.0


class DeliveryQueries:
    """Store methods for the delivery worker and ``aggregator outbox``."""

    db: Database

    def add_event(self, payload: dict[str, Any]) -> None:
        """Queue an event that no change row describes (e.g. a digest) for every sink."""
        from aggregator.store.rows import insert_outbox

        with self.db.atomic():
            insert_outbox(self.db, payload, None, None, None, now_db())

    def sync_sinks(self, sinks: list[tuple[str, str]], *, retire: bool = True) -> dict[str, int]:
        """Register ``(name, kind)`` sinks; a new one starts after the newest event.

        ``retire``: mark sinks not listed inactive (a node whose config names them all).
        """
        ids: dict[str, int] = {}
        with self.db.atomic():
            newest = self.db.value("SELECT COALESCE(MAX(id), 0) FROM outbox")
            for name, kind in sinks:
                found = self.db.value("SELECT id FROM sinks WHERE name = ?", [name])
                if found is None:
                    found = self.db.value(
                        "INSERT INTO sinks (name, kind, added_at, cursor) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind RETURNING id",
                        [name, kind, now_db(), newest],
                    )
                else:
                    self.db.execute(
                        "UPDATE sinks SET kind = ?, active = 1 WHERE id = ?", [kind, found]
                    )
                ids[name] = int(found)
            if retire:
                rows = self.db.execute("SELECT id, name FROM sinks WHERE active = 1").fetchall()
                gone = [(row[0],) for row in rows if row[1] not in ids]
                self.db.executemany("UPDATE sinks SET active = 0 WHERE id = ?", gone)
        return ids

    def enqueue_new(
        self,
        sink_id: int,
        decide: Callable[[OutboxEvent], Queued | None],
        *,
        limit: int = 500,
    ) -> int:
        """Queue the events past the sink's cursor that ``decide`` accepts; move the cursor.

        One transaction holding the sink's row (PostgreSQL: ``FOR UPDATE``), so the
        nodes take turns. Returns how many events were looked at (``limit``: more wait).
        """
        now = now_db()
        if not self._past_cursor(sink_id):
            return 0  # (without taking the sink's row: every commit wakes every worker)
        with self.db.atomic():
            lock = " FOR UPDATE" if self.db.is_postgres else ""
            cursor = self.db.value(f"SELECT cursor FROM sinks WHERE id = ?{lock}", [sink_id])
            rows = self.db.execute(
                "SELECT id, created_at, payload, baseline, entry_id, source_id FROM outbox"
                " WHERE id > ? ORDER BY id LIMIT ?",
                [cursor, limit],
            ).fetchall()
            if not rows:
                return 0
            for row in rows:
                event = OutboxEvent(row[0], row[1], row[2], bool(row[3]), _story(*row[4:], row[0]))
                queued = decide(event)
                if queued is None or (queued.batch_key and self._fold(sink_id, queued, now)):
                    continue
                self.db.execute(
                    "INSERT INTO deliveries (sink_id, outbox_id, batch_key, due_at, created_at,"
                    " updated_at, story) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (sink_id, outbox_id) DO NOTHING",
                    [sink_id, queued.outbox_id, queued.batch_key, queued.due_at, now, now,
                     queued.story or event.story],
                )  # fmt: skip
            self.db.execute("UPDATE sinks SET cursor = ? WHERE id = ?", [rows[-1][0], sink_id])
        return len(rows)

    def _past_cursor(self, sink_id: int) -> bool:
        """Whether any event lies past the sink's cursor (a read, no lock)."""
        return bool(
            self.db.value(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE id > (SELECT cursor FROM sinks"
                " WHERE id = ?))",
                [sink_id],
            )
        )

    def _in_flight(self, sink_id: int, stamp: str) -> int:
        """The sink's deliveries leased now, over all nodes."""
        return int(
            self.db.value(
                "SELECT count(*) FROM deliveries WHERE sink_id = ? AND lease_until > ?"
                " AND lease_until IS NOT NULL AND status = 'pending'",
                [sink_id, stamp],
            )
            or 0
        )

    def _fold(self, sink_id: int, item: Queued, now: str) -> bool:
        row = self.db.execute(
            "SELECT id, folded FROM deliveries WHERE sink_id = ? AND batch_key = ?"
            " AND status = 'pending' AND attempts = 0 AND due_at > ? AND claimed_by IS NULL"
            " ORDER BY id DESC LIMIT 1",
            [sink_id, item.batch_key, item.created_at],
        ).fetchone()
        if row is None:
            return False
        folded = [*json.loads(row[1]), item.outbox_id]
        self.db.execute(
            "UPDATE deliveries SET folded = ?, updated_at = ? WHERE id = ?",
            [json.dumps(folded), now, row[0]],
        )
        return True

    def claim_deliveries(
        self, sink_id: int, node_id: str, *, concurrency: int, lease: float, limit: int
    ) -> list[Delivery]:
        """Lease up to ``limit`` of the sink's next sendable deliveries to ``node_id``.

        At most ``concurrency`` of the sink's deliveries are leased at once, over all
        nodes; one while the sink is down as a whole (see the module doc).
        """
        now = utcnow()
        stamp = to_db(now)
        if self._in_flight(sink_id, stamp) >= concurrency:
            return []  # other workers fill the sink (checked before taking its row)
        with self.db.atomic():
            lock = " FOR UPDATE" if self.db.is_postgres else ""
            sink = self.db.execute(
                f"SELECT failures, retry_at FROM sinks WHERE id = ?{lock}", [sink_id]
            ).fetchone()
            if sink is None or (sink[1] is not None and sink[1] > stamp):
                return []
            allowed = 1 if sink[0] >= SINK_DOWN_AFTER else concurrency
            room = min(limit, allowed - self._in_flight(sink_id, stamp))
            if room <= 0:
                return []
            ids = [
                row[0]
                for row in self.db.execute(
                    "SELECT d.id FROM deliveries d WHERE d.sink_id = ? AND d.status = 'pending'"
                    " AND d.due_at <= ? AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?)"
                    f" AND (d.lease_until IS NULL OR d.lease_until <= ?) AND {_HEAD}"
                    " ORDER BY d.id LIMIT ?",
                    [sink_id, stamp, stamp, stamp, room],
                ).fetchall()
            ]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = self.db.execute(
                f"UPDATE deliveries SET claimed_by = ?, lease_until = ? WHERE id IN ({marks})"
                " RETURNING id, attempts, next_attempt_at, outbox_id, folded, story",
                [node_id, to_db(now + timedelta(seconds=lease)), *ids],
            ).fetchall()
            return self._with_payloads(sorted(rows))

    def _with_payloads(self, rows: list[Any]) -> list[Delivery]:
        wanted = {i for row in rows for i in [row[3], *json.loads(row[4])]}
        marks = ",".join("?" * len(wanted))
        raws = dict(
            self.db.execute(
                f"SELECT id, payload FROM outbox WHERE id IN ({marks})", sorted(wanted)
            ).fetchall()
        )
        return [
            Delivery(row[0], row[1], row[2], [raws[i] for i in [row[3], *json.loads(row[4])]],
                     row[5] or "")
            for row in rows
        ]  # fmt: skip

    def wake_at(
        self, sink_id: int, now: str | None = None, *, concurrency: int | None = None
    ) -> str | None:
        """When the sink's queue may next move (``None``: nothing pending).

        The earliest time a story's head becomes sendable: due (quiet hours, a
        batch window), its backoff over, its lease lapsed, the sink's own backoff
        over. Deliveries behind a head wait for it, so they do not count. With
        ``concurrency`` given and that many deliveries leased by other workers,
        the first lease to lapse (the workers holding them claim the next ones
        themselves as their sends end).
        """
        now = now or now_db()
        sink = self.db.execute(
            "SELECT failures, retry_at FROM sinks WHERE id = ?", [sink_id]
        ).fetchone()
        if sink is None:
            return None
        if sink[1] and sink[1] > now:
            return str(sink[1])  # down as a whole: nothing moves before then
        if concurrency is not None:
            allowed = 1 if sink[0] >= SINK_DOWN_AFTER else concurrency
            if self._in_flight(sink_id, now) >= allowed:
                lapse = self.db.value(
                    "SELECT MIN(lease_until) FROM deliveries WHERE sink_id = ?"
                    " AND lease_until > ? AND lease_until IS NOT NULL AND status = 'pending'",
                    [sink_id, now],
                )
                return None if lapse is None else str(lapse)
        later = self.db.dialect.greatest(
            "d.due_at", "COALESCE(d.next_attempt_at, d.due_at)", "COALESCE(d.lease_until, d.due_at)"
        )
        found = self.db.value(
            f"SELECT MIN({later}) FROM deliveries d WHERE d.sink_id = ?"
            f" AND d.status = 'pending' AND {_HEAD}",
            [sink_id],
        )
        return None if found is None else str(found)

    def record_attempt(
        self,
        delivery_id: int,
        outcome: str,
        *,
        code: int | None = None,
        error: str | None = None,
        duration_ms: int | None = None,
        retry_at: str | None = None,
        sink_retry_at: str | None = None,
    ) -> None:
        """Log one attempt (``delivered``, ``retry`` or ``failed``), update the delivery and
        release its lease; count the sink's failures in a row (``sink_retry_at``: when a
        sink that is down as a whole may be tried again)."""
        now = now_db()
        status = "pending" if outcome == "retry" else outcome
        with self.db.atomic():
            sink_id = self.db.value(
                "INSERT INTO delivery_attempts (delivery_id, sink_id, at, status, code, error,"
                " duration_ms) SELECT id, sink_id, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?"
                " RETURNING sink_id",
                [now, outcome, code, error, duration_ms, delivery_id],
            )
            self.db.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ?, updated_at = ?, claimed_by = NULL, lease_until = NULL"
                " WHERE id = ?",
                [status, retry_at, error, now, delivery_id],
            )
            if outcome == "retry":
                self.db.execute(
                    "UPDATE sinks SET failures = failures + 1,"
                    " retry_at = CASE WHEN failures + 1 >= ? THEN ? ELSE retry_at END"
                    " WHERE id = ?",
                    [SINK_DOWN_AFTER, sink_retry_at, sink_id],
                )
            else:
                self.db.execute(
                    "UPDATE sinks SET failures = 0, retry_at = NULL WHERE id = ? AND failures > 0",
                    [sink_id],
                )

    def sink_failures(self, sink_id: int) -> int:
        """Failed attempts in a row of the sink (any story)."""
        return int(self.db.value("SELECT failures FROM sinks WHERE id = ?", [sink_id]) or 0)

    def release_deliveries(self, node_id: str) -> None:
        """Give back the leases ``node_id`` holds (a node stopping with sends cut short)."""
        self.db.execute(
            "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?"
            " AND status = 'pending'",
            [node_id],
        )

    # -- for `aggregator outbox`, `status` and the web view ------------------

    def delivery_counts(self) -> list[dict[str, Any]]:
        """Per sink: name, kind, active, and how many deliveries are in each status."""
        sums = ", ".join(f"count(d.id) FILTER (WHERE d.status = '{s}') AS {s}" for s in STATUSES)
        return self.db.rows(
            f"SELECT s.name, s.kind, s.active, {sums} FROM sinks s"
            " LEFT JOIN deliveries d ON d.sink_id = s.id"
            " GROUP BY s.id, s.name, s.kind, s.active ORDER BY s.name"
        )

    def backlogs(self) -> list[Backlog]:
        """Per sink: pending, in flight, the oldest pending event's time, delivered lately."""
        return backlogs(self.db)

    def list_deliveries(
        self, statuses: tuple[str, ...], sink: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Deliveries in ``statuses`` (optionally of one sink), oldest first."""
        marks = ",".join("?" * len(statuses))
        where = f"d.status IN ({marks})" + (" AND s.name = ?" if sink else "")
        params: list[Any] = [*statuses, *([sink] if sink else []), limit]
        folded = self.db.dialect.json_length.format("d.folded")
        return self.db.rows(
            "SELECT d.id, s.name AS sink, d.status, d.attempts, d.next_attempt_at, d.last_error,"
            f" o.event_id, o.type, o.created_at, {folded} AS folded"
            " FROM deliveries d JOIN sinks s ON s.id = d.sink_id"
            " JOIN outbox o ON o.id = d.outbox_id"
            f" WHERE {where} ORDER BY d.id LIMIT ?",
            params,
        )

    def delivery_statuses(self, ids: list[int]) -> dict[int, str]:
        """The status of each of ``ids`` that exists (for ``outbox retry/drop IDS``)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT id, status FROM deliveries WHERE id IN ({marks})", ids)
        return {row[0]: row[1] for row in rows}

    def set_delivery_status(
        self, status: str, from_statuses: tuple[str, ...], ids: list[int], sink: str | None
    ) -> int:
        """Move deliveries (by id, or all of ``sink``, or all) to ``status``; return how many."""
        marks = ",".join("?" * len(from_statuses))
        where = [f"status IN ({marks})"]
        params: list[Any] = list(from_statuses)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            params += ids
        if sink:
            where.append("sink_id = (SELECT id FROM sinks WHERE name = ?)")
            params.append(sink)
        with self.db.atomic():
            cur = self.db.execute(
                "UPDATE deliveries SET status = ?, next_attempt_at = NULL, updated_at = ?,"
                f" claimed_by = NULL, lease_until = NULL WHERE {' AND '.join(where)}",
                [status, now_db(), *params],
            )
            if status == "pending" and sink:  # a retry also lifts the sink's own backoff
                self.db.execute(
                    "UPDATE sinks SET failures = 0, retry_at = NULL WHERE name = ?", [sink]
                )
        return int(cur.rowcount)


def backlogs(db: Database) -> list[Backlog]:
    """Each sink's backlog (any connection; read-only is enough)."""
    now = utcnow()
    stamp, minute = to_db(now), to_db(now - timedelta(seconds=60))
    rows = db.rows(
        "SELECT s.id, s.name, s.kind, s.active, s.retry_at,"
        " (SELECT count(*) FROM deliveries d WHERE d.sink_id = s.id AND d.status = 'pending')"
        " AS pending,"
        " (SELECT count(*) FROM deliveries d WHERE d.sink_id = s.id AND d.status = 'pending'"
        " AND d.lease_until > ?) AS in_flight,"
        " (SELECT min(o.created_at) FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
        " WHERE d.sink_id = s.id AND d.status = 'pending') AS oldest,"
        " (SELECT count(*) FROM delivery_attempts a WHERE a.sink_id = s.id AND a.at >= ?"
        " AND a.status = 'delivered') AS recent"
        " FROM sinks s ORDER BY s.name",
        [stamp, minute],
    )
    return [
        Backlog(
            r["name"], r["kind"], bool(r["active"]), r["pending"], r["in_flight"], r["oldest"],
            r["recent"], r["retry_at"] if r["retry_at"] and r["retry_at"] > stamp else None,
        )
        for r in rows
    ]  # fmt: skip


def _story(entry_id: int | None, source_id: int | None, outbox_id: int) -> str:
    """The story an event belongs to: its entry, else its source, else itself."""
    if entry_id is not None:
        return f"entry:{entry_id}"
    if source_id is not None:
        return f"source:{source_id}"
    return f"event:{outbox_id}"
