"""Migrations written once for both backends (0010 onwards).

Each is a list of statements in the SQL both dialects share, with ``{id}``,
``{time}`` and ``{real}`` for the column types they spell differently
(``Dialect.fill``). SQLite applies them through sqlite-utils ``Migrations``
(``schema.py``), PostgreSQL through ``schema_pg.migrate``, under the same names.
Add new ones at the end; never edit or reorder an applied one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aggregator.store.db import Database


@dataclass(frozen=True, slots=True)
class Migration:
    """One named step: statements, then an optional function for what SQL cannot say."""

    name: str
    statements: tuple[str, ...]
    after: Callable[[Database], None] | None = field(default=None)

    def apply(self, db: Database) -> None:
        """Run the statements (in the caller's transaction), then ``after``."""
        for statement in self.statements:
            db.execute(db.dialect.fill(statement))
        if self.after is not None:
            self.after(db)


_NODES = (
    # every daemon process that has run against this database, and its pulse
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('starting', 'running', 'stopping', 'stopped')),
        started_at {time} NOT NULL,
        heartbeat_at {time} NOT NULL,
        config_path TEXT,
        config_sources TEXT NOT NULL DEFAULT '[]',
        summary TEXT,
        network TEXT NOT NULL DEFAULT 'up',
        database TEXT NOT NULL DEFAULT 'up',
        inflight TEXT NOT NULL DEFAULT '[]'
    )
    """,
    "CREATE INDEX idx_nodes_heartbeat ON nodes (heartbeat_at)",
    # a source's host (the per-host cap holds across nodes), and who holds its poll:
    # claimed_by is the node polling it now, claim counts the claims, and the lease is
    # next_check_at (a claim moves it to when the lease lapses)
    "ALTER TABLE sources ADD COLUMN host TEXT",
    "ALTER TABLE sources ADD COLUMN claimed_by TEXT",
    "ALTER TABLE sources ADD COLUMN claim INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX idx_sources_claimed ON sources (host) WHERE claimed_by IS NOT NULL",
    # the first successful listing is a source's baseline: stored, not announced
    "ALTER TABLE sources ADD COLUMN first_listing_at {time}",
    "UPDATE sources SET first_listing_at = COALESCE(last_success_at, added_at)"
    " WHERE last_success_at IS NOT NULL"
    " OR EXISTS (SELECT 1 FROM entries e WHERE e.source_id = sources.id)",
    "ALTER TABLE changes ADD COLUMN baseline INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE outbox ADD COLUMN baseline INTEGER NOT NULL DEFAULT 0",
)

_DELIVERY_CLAIMS = (
    # a delivery's story (events of one story go out in version order) and its lease:
    # the node sending it, until when
    "ALTER TABLE deliveries ADD COLUMN story TEXT",
    "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT",
    "ALTER TABLE deliveries ADD COLUMN lease_until {time}",
    "UPDATE deliveries SET story = (SELECT CASE"
    " WHEN o.entry_id IS NOT NULL THEN 'entry:' || o.entry_id"
    " WHEN o.source_id IS NOT NULL THEN 'source:' || o.source_id"
    " ELSE 'event:' || o.id END FROM outbox o WHERE o.id = deliveries.outbox_id)"
    " WHERE status = 'pending'",
    "CREATE INDEX idx_deliveries_pending ON deliveries (sink_id, id) WHERE status = 'pending'",
    "CREATE INDEX idx_deliveries_story ON deliveries (sink_id, story, id) WHERE status = 'pending'",
    # the deliveries in flight (leased) of a sink, counted at every claim
    "CREATE INDEX idx_deliveries_leased ON deliveries (sink_id, lease_until)"
    " WHERE lease_until IS NOT NULL",
    "CREATE INDEX idx_delivery_attempts_sink ON delivery_attempts (sink_id, at)",
    # a sink down as a whole is backed off as a whole
    "ALTER TABLE sinks ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sinks ADD COLUMN retry_at {time}",
)

_WEBSUB = (
    # one WebSub subscription per source (aggregator/websub, store/websub.py): the hub and
    # topic last discovered, the callback path (token) and secrets, the lease, the next
    # thing to do and when, and which node is doing it (busy_by until busy_until)
    """
    CREATE TABLE websub (
        id {id},
        source_id INTEGER NOT NULL UNIQUE REFERENCES sources (id),
        state TEXT NOT NULL,
        hub TEXT,
        topic TEXT,
        token TEXT UNIQUE,
        secret TEXT,
        new_secret TEXT,
        pending TEXT,
        requested_at {time},
        verified_at {time},
        lease_seconds INTEGER,
        expires_at {time},
        next_action_at {time},
        failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_at {time},
        deliveries INTEGER NOT NULL DEFAULT 0,
        last_delivery_at {time},
        rejected INTEGER NOT NULL DEFAULT 0,
        last_rejected_at {time},
        busy_by TEXT,
        busy_until {time},
        updated_at {time} NOT NULL
    )
    """,
    "CREATE INDEX idx_websub_next ON websub (next_action_at)",
    # deliveries accepted under the current secret (a mark of each signature): a replay
    # of one is refused; the marks go when the secret changes
    """
    CREATE TABLE websub_seen (
        id {id},
        source_id INTEGER NOT NULL REFERENCES sources (id),
        mark TEXT NOT NULL,
        received_at {time} NOT NULL,
        UNIQUE (source_id, mark)
    )
    """,
    # how a fetches row's body came: polled, or pushed by a hub
    "ALTER TABLE fetches ADD COLUMN via TEXT NOT NULL DEFAULT 'poll'",
)

SHARED: list[Migration] = [
    Migration("0010_nodes", _NODES),
    Migration("0011_delivery_claims", _DELIVERY_CLAIMS),
    Migration("0012_websub", _WEBSUB),
]
