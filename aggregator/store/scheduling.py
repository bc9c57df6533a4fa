"""Scheduling state in the database: next checks, gone and moved sources, the daemon's pulse.

Writers take the ``Store`` (they run on its thread); ``status_report`` and
``summary_line`` only read, so the CLI can call them on a read-only
connection while the daemon runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aggregator.store import Database, Store
from aggregator.timeutil import from_db, now_db, to_db, utcnow


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the scheduler needs to know of a source between polls."""

    source_id: int
    name: str
    url: str
    config_url: str
    next_check_at: datetime | None
    last_fetch_at: datetime | None
    interval_now: float | None
    failures: int
    gone: bool
    host: str = ""
    #: A node holds the source now (its claim's lease has not lapsed).
    held: bool = False


def source_states(store: Store) -> dict[str, SourceState]:
    """The scheduling state of every active source, by name (batched plans written first)."""
    store.flush()
    rows = store.db.execute(
        "SELECT id, name, url, config_url, next_check_at, last_fetch_at, interval_now_seconds,"
        " consecutive_failures, gone_at IS NOT NULL AND gone_url = url,"
        " claimed_by IS NOT NULL AND next_check_at > ? FROM sources WHERE active = 1",
        [now_db()],
    ).fetchall()
    return {row[1]: _state(row) for row in rows}


def _state(row: tuple[Any, ...]) -> SourceState:
    return SourceState(
        source_id=row[0],
        name=row[1],
        url=row[2],
        config_url=row[3],
        next_check_at=from_db(row[4]) if row[4] else None,
        last_fetch_at=from_db(row[5]) if row[5] else None,
        interval_now=row[6],
        failures=row[7],
        gone=bool(row[8]),
        held=bool(row[9]),
    )


def save_schedules(store: Store, plans: list[tuple[int, datetime, float, str]]) -> None:
    """Plan the next check of sources that are overdue or never planned (one transaction).

    A source planned in the future by the time this is written (another node
    polled it meanwhile, or holds it now: a claim's lease is in ``next_check_at``)
    keeps that plan.
    """
    store.flush()
    now = now_db()
    with store.db.atomic():
        store.db.executemany(
            "UPDATE sources SET next_check_at = ?, interval_now_seconds = ?,"
            " schedule_reason = ?, claimed_by = NULL"
            " WHERE id = ? AND (next_check_at IS NULL OR next_check_at <= ?)",
            [(to_db(at), iv, reason, source_id, now) for source_id, at, iv, reason in plans],
        )


def reset_schedules(store: Store, source_ids: list[int]) -> None:
    """Forget the planned check and adaptive interval (their config changed)."""
    store.flush()
    with store.db.atomic():
        for source_id in source_ids:
            store.db.execute(
                "UPDATE sources SET next_check_at = NULL, interval_now_seconds = NULL WHERE id = ?",
                [source_id],
            )


def note_moved(store: Store, source_id: int, old_url: str) -> None:
    """Record that a permanent redirect moved the source away from ``old_url``."""
    store.db.execute(
        "UPDATE sources SET moved_from = ?, moved_at = ? WHERE id = ?",
        [old_url, now_db(), source_id],
    )


def mark_gone(store: Store, source_id: int, error: str | None) -> None:
    """Stop polling a source that answered 410 and raise ``source.failing`` right away.

    The store raises ``source.failing`` itself when the failure count reaches
    its threshold; this one does not raise it twice.
    """
    now = now_db()
    store.drop_plan(source_id)
    store.flush()
    before = store.source(source_id)
    with store.db.atomic():
        store.db.execute(
            "UPDATE sources SET gone_at = ?, gone_url = url, next_check_at = NULL,"
            " claimed_by = NULL, schedule_reason = 'gone (HTTP 410): polling stopped'"
            " WHERE id = ?",
            [now, source_id],
        )
        if before["consecutive_failures"] != store.failing_after:
            store._source_event(
                "source.failing", before, before["consecutive_failures"], error, now
            )


def write_daemon_state(
    store: Store,
    state: str,
    *,
    started_at: str,
    config_path: str,
    summary: str,
    inflight: list[str],
    network: str,
) -> None:
    """Upsert the single ``daemon_state`` row (the daemon's heartbeat); writes batched rows."""
    store.flush()
    store.db.execute(
        "INSERT INTO daemon_state (id, pid, state, started_at, heartbeat_at, config_path,"
        " summary, inflight, network) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, state = excluded.state,"
        " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,"
        " config_path = excluded.config_path, summary = excluded.summary,"
        " inflight = excluded.inflight, network = excluded.network",
        [
            os.getpid(), state, started_at, now_db(), config_path, summary,
            json.dumps(sorted(inflight)), network,
        ],
    )  # fmt: skip


# -- reads (any connection, read-only is enough) -----------------------------


def summary_line(db: Database) -> str:
    """``"312 sources, 4 failing, 1 gone, last change 2 min ago"``."""
    total, failing, gone, last = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE consecutive_failures > 0 AND gone_at IS NULL),"
        " count(*) FILTER (WHERE gone_at IS NOT NULL AND gone_url = url), max(last_change_at)"
        " FROM sources WHERE active = 1"
    ).fetchone()
    parts = [f"{total} sources", f"{failing} failing"]
    if gone:
        parts.append(f"{gone} gone")
    parts.append(f"last change {ago_text(last)}" if last else "no change yet")
    return ", ".join(parts)


def ago_text(moment: str, now: datetime | None = None) -> str:
    """``"2 min ago"`` for a database timestamp."""
    seconds = max(0, int(((now or utcnow()) - from_db(moment)).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def status_report(db: Database) -> dict[str, Any]:
    """The daemon row (or ``None``) and every active source's scheduling state."""
    tables = db.table_names()
    daemon = None
    if "daemon_state" in tables:
        found = db.rows("SELECT * FROM daemon_state WHERE id = 1")
        if found:
            daemon = found[0]
            daemon["inflight"] = json.loads(daemon["inflight"])
    sources = [
        dict(zip(_STATUS_COLUMNS, row, strict=True))
        for row in db.execute(
            f"SELECT {', '.join(_STATUS_COLUMNS)} FROM sources WHERE active = 1"
            " ORDER BY gone_at IS NULL, consecutive_failures DESC, next_check_at IS NOT NULL,"
            " next_check_at, name"
        ).fetchall()
    ]
    from aggregator.store.cluster import nodes_report
    from aggregator.store.outbox import backlogs

    nodes = nodes_report(db) if "nodes" in tables else []
    sinks = [dataclasses.asdict(b) for b in backlogs(db)] if "sinks" in tables else []
    return {
        "daemon": daemon,
        "nodes": nodes,
        "sinks": sinks,
        "summary": summary_line(db),
        "sources": sources,
    }


_STATUS_COLUMNS = (
    "name",
    "url",
    "next_check_at",
    "interval_now_seconds",
    "schedule_reason",
    "consecutive_failures",
    "last_error",
    "last_success_at",
    "last_change_at",
    "gone_at",
    "gone_url",
    "moved_from",
    "moved_at",
)
