"""Retention: what is pruned from the database, and when (``[storage]`` keep_* keys).

Versions, entries and changes are never pruned: they are the history. Two kinds
of bookkeeping are:

* **The fetch log** (``keep_fetches``). Every poll adds a row to ``fetches``, so
  polling 1,000 sources every 5 minutes adds about 100 million rows a year.
  Rows older than ``keep_fetches`` are deleted, except the ones that brought a
  change (the rows ``versions.fetch_id`` and ``changes.fetch_id`` point at):
  there is one per real change, so they grow with the news, not with the
  polling. References are never nulled.
* **Delivered events** (``keep_events``). An outbox event older than
  ``keep_events`` that every sink has looked at (a paused sink too), and that no sink
  still has pending or failed (as its own delivery or folded into one), keeps
  its ``outbox`` row (``event_id``, ``type``, what it was about, when) but its
  ``payload`` becomes ``''``; its ``deliveries`` rows and their
  ``delivery_attempts`` are deleted. An event waiting for a sink is never
  pruned, however old.

Each rule deletes in batches of ``BATCH`` rows, each batch its own short
transaction (``RetentionPass.step`` is one batch of each rule), so readers and
the writer are never held up for long.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aggregator.config import StorageConfig
from aggregator.store.db import Database
from aggregator.timeutil import to_db, utcnow

BATCH = 2000

# Rows old enough that no version and no change points at (through the fetch_id
# indexes of migration 0009, which also keep the foreign-key checks of the delete
# cheap). ``:after`` resumes a pass where its previous batch stopped, so rows kept
# for their changes are stepped over once per pass, not once per batch.
_PRUNE_FETCHES = """
DELETE FROM fetches WHERE id IN (
    SELECT f.id FROM fetches f
    WHERE f.started_at < :cutoff AND f.started_at >= :after
      AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.fetch_id = f.id)
      AND NOT EXISTS (SELECT 1 FROM changes c WHERE c.fetch_id = f.id)
    ORDER BY f.started_at LIMIT :batch
)
RETURNING started_at
"""

# Events old enough, looked at by every sink (a paused one too: its events wait), and
# not waiting in any queue, as their own delivery or folded into one.
_SETTLED_EVENTS = """
SELECT o.id FROM outbox o
WHERE o.payload <> '' AND o.created_at < :cutoff
  AND o.id <= COALESCE((SELECT MIN(cursor) FROM sinks), o.id)
  AND NOT EXISTS (
      SELECT 1 FROM deliveries d
      WHERE d.outbox_id = o.id AND d.status IN ('pending', 'failed'))
  AND o.id NOT IN (
      SELECT CAST(j.value AS BIGINT) FROM deliveries d, {folded}
      WHERE d.status IN ('pending', 'failed')
        AND d.folded <> '[]')
ORDER BY o.created_at LIMIT :batch
"""


def prune(
    db: Database, storage: StorageConfig, now: datetime | None = None, *, batch: int = BATCH
) -> dict[str, int]:
    """Apply every retention rule of ``storage`` as of ``now`` (default: the clock).

    Returns:
        How many rows each rule removed: ``fetches``, ``events`` (payloads
        emptied), ``deliveries`` and ``delivery_attempts``.
    """
    run = RetentionPass.of(db, storage, now, batch=batch)
    while run.step():
        pass
    return run.removed


class RetentionPass:
    """One pass of the rules, in steps: each ``step`` is one short transaction per rule.

    The daemon runs one step per call on the store's thread, so polls write in between.
    ``keep_fetches`` / ``keep_events`` of ``None`` leave that rule out.
    """

    def __init__(
        self,
        db: Database,
        keep_fetches: float | None,
        keep_events: float | None,
        now: datetime | None = None,
        *,
        batch: int = BATCH,
    ) -> None:
        now = now or utcnow()
        self.db = db
        self.batch = batch
        self.fetch_cutoff = to_db(now - timedelta(seconds=keep_fetches or 0))
        self.event_cutoff = to_db(now - timedelta(seconds=keep_events or 0))
        # started_at of the last fetches row deleted by this pass (a time before any)
        self.after = "0001-01-01 00:00:00.000"
        self.pending = {"fetches"} if keep_fetches is not None else set()
        if keep_events is not None:
            self.pending.add("events")
        self.removed = dict.fromkeys(("fetches", "events", "deliveries", "delivery_attempts"), 0)

    @classmethod
    def of(
        cls,
        db: Database,
        storage: StorageConfig,
        now: datetime | None = None,
        *,
        batch: int = BATCH,
    ) -> RetentionPass:
        """A pass of every rule of ``[storage]``."""
        return cls(db, storage.keep_fetches, storage.keep_events, now, batch=batch)

    def step(self) -> bool:
        """Prune one batch of each rule that has work left; True while any has more."""
        if "fetches" in self.pending and self._fetches() < self.batch:
            self.pending.discard("fetches")
        if "events" in self.pending and self._events() < self.batch:
            self.pending.discard("events")
        return bool(self.pending)

    def _fetches(self) -> int:
        params = {"cutoff": self.fetch_cutoff, "after": self.after, "batch": self.batch}
        with self.db.atomic():
            gone = [row[0] for row in self.db.execute(_PRUNE_FETCHES, params)]
        if gone:
            self.after = max(gone)
        self.removed["fetches"] += len(gone)
        return len(gone)

    def _events(self) -> int:
        with self.db.atomic():
            ids = [
                row[0]
                for row in self.db.execute(
                    _SETTLED_EVENTS.format(folded=self.db.dialect.json_items.format("d.folded")),
                    {"cutoff": self.event_cutoff, "batch": self.batch},
                )
            ]
            if ids:
                self._empty(ids)
        self.removed["events"] += len(ids)
        return len(ids)

    def _empty(self, ids: list[int]) -> None:
        """Delete the events' deliveries and attempts; write their rows again, payload ``''``.

        A row emptied in place keeps its page as full as before (SQLite merges pages
        when rows are deleted, not when they shrink), so on SQLite each is deleted and
        inserted again under the same id: the space goes back to the file for later
        writes. PostgreSQL writes a new row version anyway; vacuum reclaims the old.
        """
        marks = ",".join("?" * len(ids))
        deliveries = f"SELECT id FROM deliveries WHERE outbox_id IN ({marks})"
        self.removed["delivery_attempts"] += self.db.execute(
            f"DELETE FROM delivery_attempts WHERE delivery_id IN ({deliveries})", ids
        ).rowcount
        self.removed["deliveries"] += self.db.execute(
            f"DELETE FROM deliveries WHERE outbox_id IN ({marks})", ids
        ).rowcount
        if self.db.is_postgres:
            self.db.execute(f"UPDATE outbox SET payload = '' WHERE id IN ({marks})", ids)
            return
        self.db.execute("DROP TABLE IF EXISTS temp.pruned_outbox")
        self.db.execute(
            f"CREATE TEMP TABLE pruned_outbox AS SELECT * FROM outbox WHERE id IN ({marks})", ids
        )
        self.db.execute("UPDATE temp.pruned_outbox SET payload = ''")
        self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
        self.db.execute("INSERT INTO outbox SELECT * FROM temp.pruned_outbox ORDER BY id")
        self.db.execute("DROP TABLE temp.pruned_outbox")
