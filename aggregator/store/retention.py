"""Retention of the ``fetches`` log (``[storage] keep_fetches``).

Every poll adds a row to ``fetches``, so polling 1,000 sources every 5 minutes
adds about 100 million rows a year. Rows older than ``keep_fetches`` are
deleted, except the ones a version or a change points at
(``versions.fetch_id``, ``changes.fetch_id``): those record when and from
which response a version was seen, and there is one per real change, so they
grow with the news, not with the polling. References are never nulled.

Deletion runs in batches of ``BATCH`` rows, each its own short transaction,
so readers and the writer are never held up for long.
"""

from __future__ import annotations

from datetime import timedelta

from sqlite_utils import Database

from aggregator.timeutil import to_db, utcnow

BATCH = 5000

_PRUNE = """
DELETE FROM fetches WHERE id IN (
    SELECT id FROM fetches
    WHERE started_at < :cutoff
      AND id NOT IN (SELECT fetch_id FROM versions WHERE fetch_id IS NOT NULL)
      AND id NOT IN (SELECT fetch_id FROM changes WHERE fetch_id IS NOT NULL)
    ORDER BY id LIMIT :batch
)
"""


def prune_fetches(db: Database, keep_seconds: float, *, batch: int = BATCH) -> int:
    """Delete unreferenced ``fetches`` rows older than ``keep_seconds``; return how many."""
    cutoff = to_db(utcnow() - timedelta(seconds=keep_seconds))
    total = 0
    while True:
        with db.atomic():
            deleted = db.execute(_PRUNE, {"cutoff": cutoff, "batch": batch}).rowcount
        total += deleted
        if deleted < batch:
            return total
