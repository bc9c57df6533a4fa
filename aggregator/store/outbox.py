"""Delivery queries: per-sink queues over the ``outbox`` table (mixed into ``Store``).

Each sink has a ``cursor`` (the last ``outbox.id`` it has looked at). The
worker reads events past the cursor, and in one transaction queues the ones
the sink's filters accept as ``deliveries`` and moves the cursor. A delivery
is ``pending`` until an attempt succeeds (``delivered``), is refused for good
(``failed``) or a user drops it (``dropped``); every attempt is logged in
``delivery_attempts``. A new sink starts with its cursor at the newest event:
it receives events created after it first appeared, not the whole history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aggregator.timeutil import now_db

if TYPE_CHECKING:
    from sqlite_utils import Database

STATUSES = ("pending", "delivered", "failed", "dropped")


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An outbox row: its id, when it was written, and the exact JSON text."""

    id: int
    created_at: str
    raw: str

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


@dataclass(slots=True)
class Delivery:
    """The head of a sink's queue, with its events' JSON texts (more than one when folded)."""

    id: int
    attempts: int
    next_attempt_at: str | None
    raws: list[str] = field(default_factory=list)


class DeliveryQueries:
    """Store methods for the delivery worker and ``aggregator outbox``."""

    db: Database

    def add_event(self, payload: dict[str, Any]) -> None:
        """Queue an event that no change row describes (e.g. a digest) for every sink."""
        from aggregator.store.rows import insert_outbox

        with self.db.atomic():
            insert_outbox(self.db, payload, None, None, None, now_db())

    def sync_sinks(self, sinks: list[tuple[str, str]]) -> dict[str, int]:
        """Register ``(name, kind)`` sinks; a new one starts after the newest event."""
        ids: dict[str, int] = {}
        with self.db.atomic():
            newest = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0]
            for name, kind in sinks:
                row = self.db.execute("SELECT id FROM sinks WHERE name = ?", [name]).fetchone()
                if row is None:
                    cur = self.db.execute(
                        "INSERT INTO sinks (name, kind, added_at, cursor) VALUES (?, ?, ?, ?)",
                        [name, kind, now_db(), newest],
                    )
                    ids[name] = int(cur.lastrowid or 0)
                else:
                    ids[name] = int(row[0])
                    self.db.execute(
                        "UPDATE sinks SET kind = ?, active = 1 WHERE id = ?", [kind, ids[name]]
                    )
            marks = ",".join("?" * len(ids)) or "''"
            self.db.execute(f"UPDATE sinks SET active = 0 WHERE name NOT IN ({marks})", list(ids))
        return ids

    def events_after_cursor(self, sink_id: int, limit: int = 500) -> list[OutboxEvent]:
        """Outbox events the sink has not looked at yet, oldest first."""
        rows = self.db.execute(
            "SELECT id, created_at, payload FROM outbox WHERE id > (SELECT cursor FROM sinks"
            " WHERE id = ?) ORDER BY id LIMIT ?",
            [sink_id, limit],
        ).fetchall()
        return [OutboxEvent(*row) for row in rows]

    def enqueue(self, sink_id: int, queued: list[Queued], cursor: int) -> None:
        """Queue accepted events (folding same-story ones into an open batch); move the cursor."""
        now = now_db()
        with self.db.atomic():
            for item in queued:
                if item.batch_key and self._fold(sink_id, item, now):
                    continue
                self.db.execute(
                    "INSERT OR IGNORE INTO deliveries (sink_id, outbox_id, batch_key, due_at,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [sink_id, item.outbox_id, item.batch_key, item.due_at, now, now],
                )
            self.db.execute("UPDATE sinks SET cursor = ? WHERE id = ?", [cursor, sink_id])

    def _fold(self, sink_id: int, item: Queued, now: str) -> bool:
        row = self.db.execute(
            "SELECT id, folded FROM deliveries WHERE sink_id = ? AND batch_key = ?"
            " AND status = 'pending' AND attempts = 0 AND due_at > ? ORDER BY id DESC LIMIT 1",
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

    def next_delivery(self, sink_id: int, now: str) -> Delivery | None:
        """The sink's oldest pending delivery that is due, with its events' JSON."""
        row = self.db.execute(
            "SELECT id, attempts, next_attempt_at, outbox_id, folded FROM deliveries"
            " WHERE sink_id = ? AND status = 'pending' AND due_at <= ? ORDER BY id LIMIT 1",
            [sink_id, now],
        ).fetchone()
        if row is None:
            return None
        ids = [row[3], *json.loads(row[4])]
        marks = ",".join("?" * len(ids))
        raws = dict(
            self.db.execute(f"SELECT id, payload FROM outbox WHERE id IN ({marks})", ids).fetchall()
        )
        return Delivery(row[0], row[1], row[2], [raws[i] for i in ids])

    def wake_at(self, sink_id: int, now: str | None = None) -> str | None:
        """When the sink's queue may next move (``None``: nothing pending).

        The head of the queue is the oldest pending delivery due at ``now``; while
        it waits out a backoff, the deliveries queued behind it wait too, so only
        the head and the ones not due yet (quiet hours, batch windows) count.
        """
        now = now or now_db()
        row = self.db.execute(
            "SELECT MIN(MAX(due_at, COALESCE(next_attempt_at, due_at))) FROM deliveries"
            " WHERE sink_id = ? AND status = 'pending' AND (due_at > ? OR id = (SELECT id"
            " FROM deliveries WHERE sink_id = ? AND status = 'pending' AND due_at <= ?"
            " ORDER BY id LIMIT 1))",
            [sink_id, now, sink_id, now],
        ).fetchone()
        return row[0] if row else None

    def record_attempt(
        self,
        delivery_id: int,
        outcome: str,
        *,
        code: int | None = None,
        error: str | None = None,
        duration_ms: int | None = None,
        retry_at: str | None = None,
    ) -> None:
        """Log one attempt (``delivered``, ``retry`` or ``failed``) and update the delivery."""
        now = now_db()
        status = "pending" if outcome == "retry" else outcome
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO delivery_attempts (delivery_id, sink_id, at, status, code, error,"
                " duration_ms) SELECT id, sink_id, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?",
                [now, outcome, code, error, duration_ms, delivery_id],
            )
            self.db.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ?, updated_at = ? WHERE id = ?",
                [status, retry_at, error, now, delivery_id],
            )

    # -- for `aggregator outbox` ------------------------------------------

    def delivery_counts(self) -> list[dict[str, Any]]:
        """Per sink: name, kind, active, and how many deliveries are in each status."""
        sums = ", ".join(f"SUM(d.status = '{s}') AS {s}" for s in STATUSES)
        rows = self.db.execute(
            f"SELECT s.name, s.kind, s.active, {sums} FROM sinks s"
            " LEFT JOIN deliveries d ON d.sink_id = s.id GROUP BY s.id ORDER BY s.name"
        )
        names = [c[0] for c in rows.description]
        found = [dict(zip(names, r, strict=True)) for r in rows]
        return [{k: (v or 0) if k in STATUSES else v for k, v in row.items()} for row in found]

    def list_deliveries(
        self, statuses: tuple[str, ...], sink: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Deliveries in ``statuses`` (optionally of one sink), oldest first."""
        marks = ",".join("?" * len(statuses))
        where = f"d.status IN ({marks})" + (" AND s.name = ?" if sink else "")
        params: list[Any] = [*statuses, *([sink] if sink else []), limit]
        cur = self.db.execute(
            "SELECT d.id, s.name AS sink, d.status, d.attempts, d.next_attempt_at, d.last_error,"
            " o.event_id, o.type, o.created_at, json_array_length(d.folded) AS folded"
            " FROM deliveries d JOIN sinks s ON s.id = d.sink_id"
            " JOIN outbox o ON o.id = d.outbox_id"
            f" WHERE {where} ORDER BY d.id LIMIT ?",
            params,
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

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
                "UPDATE deliveries SET status = ?, next_attempt_at = NULL, updated_at = ?"
                f" WHERE {' AND '.join(where)}",
                [status, now_db(), *params],
            )
        return cur.rowcount
