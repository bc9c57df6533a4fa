"""Several daemons on one database: nodes, their pulse, and claims on due sources.

Every ``aggregator run`` is a **node**: a row in ``nodes`` (a new id per process:
name, host, pid, heartbeat, the sources its config names). On SQLite there is one
node at a time (``NodeLock``); on PostgreSQL any number.

A source due for a check is **claimed** by exactly one node, in one transaction:
its ``claim`` counter goes up, ``claimed_by`` names the node, and the lease is
carried in ``next_check_at``, moved to when the lease lapses. Claims are taken
one node at a time (a transaction-scoped advisory lock on PostgreSQL; SQLite has
one writer), which also keeps the per-host cap true across nodes: a host's
claimed sources, summed over all nodes, never exceed ``[fetch] per_host``.
The node writes the result only while its claim still holds (``Store._hold``),
and its next plan releases the claim (``Store.plan_check``). A node that dies
leaves its sources due again once their leases lapse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from aggregator.errors import StoreError
from aggregator.store import Database, FetchState, Store, mask
from aggregator.timeutil import from_db, now_db, to_db, utcnow

#: The advisory lock key held while claiming (every node uses the same).
CLAIM_LOCK = 0x61676773
#: A node whose heartbeat is older than this is not counted as running.
DEAD_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Node:
    """This process, as the ``nodes`` table knows it."""

    id: str
    name: str
    host: str
    pid: int

    @classmethod
    def here(cls, name: str | None = None) -> Node:
        """A new node id for this process (``name`` defaults to the host name)."""
        host = socket.gethostname()
        pid = os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:8]}", name or host, host, pid)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A source this node claimed: poll it, then plan it under ``claim``."""

    source_id: int
    name: str
    claim: int
    interval_now: float | None


@dataclass(frozen=True, slots=True)
class ClaimRound:
    """What one claim found: the sources claimed, and when to look again."""

    claimed: list[Claimed]
    #: The earliest due time of this node's sources not claimed now (None: none planned).
    next_due: str | None
    #: Due sources left for later (the limit, or their host at its cap).
    waiting: int


class NodeLock:
    """One daemon per SQLite file: an exclusive ``flock`` on ``<database>.lock``.

    The lock goes with the process (a kill -9 releases it), so a stale file
    never blocks a start.
    """

    def __init__(self, database: str | Path) -> None:
        self.path = Path(f"{database}.lock")
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another process holds it."""
        try:
            handle = self.path.open("a+")
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.path}: {exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        """Let the next daemon start."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def holder_text(db: Database, path: str | Path) -> str:
    """Why a second daemon may not start on SQLite, naming the running one."""
    rows = db.rows(
        "SELECT pid, host, started_at FROM nodes WHERE state <> 'stopped'"
        " ORDER BY heartbeat_at DESC LIMIT 1"
    )
    who = (
        f"pid {rows[0]['pid']} on {rows[0]['host']}, running since {rows[0]['started_at']} UTC"
        if rows
        else "another process"
    )
    return (
        f"another aggregator daemon ({who}) is already using {path}: one daemon per SQLite"
        " database. To run several nodes, use PostgreSQL ([storage] database ="
        ' "postgresql://...", see docs/postgresql.md)'
    )


# -- nodes ------------------------------------------------------------------------------


def register(store: Store, node: Node, config_path: str, sources: list[str]) -> None:
    """Add this node (state ``starting``); free what dead processes of this host held."""
    now = now_db()
    db = store.db
    with db.atomic():
        release_dead(db, node.host, now)
        db.execute(
            "INSERT INTO nodes (id, name, host, pid, state, started_at, heartbeat_at,"
            " config_path, config_sources) VALUES (?, ?, ?, ?, 'starting', ?, ?, ?, ?)",
            [node.id, node.name, node.host, node.pid, now, now, config_path, json.dumps(sources)],
        )


def release_dead(db: Database, host: str, now: str | None = None) -> int:
    """Free at once, instead of when their leases lapse, the claims and leases of processes
    of ``host`` that are gone (a kill -9, a crash); mark their nodes stopped.

    A holder is named ``host:pid:token``; another host's holders are left to their leases.
    Returns how many holders were released.
    """
    now = now_db() if now is None else now
    holders = {
        row[0]
        for sql in (
            "SELECT DISTINCT claimed_by FROM sources WHERE claimed_by LIKE ?",
            "SELECT DISTINCT claimed_by FROM deliveries WHERE claimed_by LIKE ?",
            "SELECT id FROM nodes WHERE id LIKE ? AND state <> 'stopped'",
        )
        for row in db.execute(sql, [f"{host}:%"]).fetchall()
    }
    dead = [h for h in holders if not _alive(_pid_of(h))]
    for holder in dead:
        release(db, holder, now)
    return len(dead)


def _pid_of(holder: str) -> int:
    parts = holder.split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else -1


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release(db: Database, node_id: str, now: str | None = None) -> None:
    """Mark ``node_id`` stopped and give back what it held (sources due now, leases off)."""
    now = now or now_db()
    db.execute(
        "UPDATE sources SET claimed_by = NULL, next_check_at = ? WHERE claimed_by = ?"
        " AND next_check_at > ?",
        [now, node_id, now],
    )
    db.execute("UPDATE sources SET claimed_by = NULL WHERE claimed_by = ?", [node_id])
    db.execute(
        "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?",
        [node_id],
    )
    db.execute("UPDATE nodes SET state = 'stopped' WHERE id = ?", [node_id])


def release_all(store: Store) -> None:
    """SQLite at start-up: the previous daemon is gone, so nothing it held is held."""
    store.flush()
    db = store.db
    with db.atomic():
        db.execute(
            "UPDATE sources SET claimed_by = NULL, next_check_at = NULL"
            " WHERE claimed_by IS NOT NULL"
        )
        db.execute(
            "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL"
            " WHERE claimed_by IS NOT NULL"
        )
        db.execute("UPDATE nodes SET state = 'stopped' WHERE state <> 'stopped'")


def heartbeat(store: Store, node: Node, state: str, **fields: Any) -> None:
    """Write this node's pulse and state (``summary``, ``network``, ``database``, ``inflight``)."""
    store.flush()
    sets = {"state": state, "heartbeat_at": now_db()}
    for key, value in fields.items():
        sets[key] = json.dumps(sorted(value)) if key == "inflight" else value
    assignments = ", ".join(f"{k} = ?" for k in sets)
    store.db.execute(f"UPDATE nodes SET {assignments} WHERE id = ?", [*sets.values(), node.id])


def set_sources(store: Store, node: Node, sources: list[str]) -> None:
    """Record the sources this node's config names (after a reload)."""
    store.db.execute(
        "UPDATE nodes SET config_sources = ? WHERE id = ?", [json.dumps(sources), node.id]
    )


def others_sources(db: Database, node_id: str) -> dict[str, set[str]]:
    """The sources each other running node's config names, by node name."""
    cutoff = to_db(utcnow() - timedelta(seconds=DEAD_AFTER))
    found: dict[str, set[str]] = {}
    for row in db.rows(
        "SELECT id, name, host, pid, config_sources FROM nodes WHERE id <> ?"
        " AND state <> 'stopped' AND heartbeat_at >= ?",
        [node_id, cutoff],
    ):
        label = f"{row['name']} (pid {row['pid']} on {row['host']})"
        found[label] = set(json.loads(row["config_sources"] or "[]"))
    return found


def nodes_report(db: Database, *, within: float = 86400.0) -> list[dict[str, Any]]:
    """Nodes seen in the last ``within`` seconds, newest first, with the sources in hand."""
    now = utcnow()
    since = to_db(now - timedelta(seconds=within))
    rows = db.rows(
        "SELECT id, name, host, pid, state, started_at, heartbeat_at, summary, network,"
        " database, inflight FROM nodes WHERE heartbeat_at >= ? ORDER BY heartbeat_at DESC",
        [since],
    )
    held = Counter(
        {
            r["claimed_by"]: r["n"]
            for r in db.rows(
                "SELECT claimed_by, count(*) AS n FROM sources WHERE claimed_by IS NOT NULL"
                " AND next_check_at > ? GROUP BY claimed_by",
                [to_db(now)],
            )
        }
    )
    for row in rows:
        row["sources_in_hand"] = held.get(row["id"], 0)
        row["inflight"] = json.loads(row["inflight"] or "[]")
        age = (now - from_db(row["heartbeat_at"])).total_seconds()
        row["alive"] = row["state"] != "stopped" and age < DEAD_AFTER
    return rows


# -- claims -----------------------------------------------------------------------------


def set_mine(store: Store, source_ids: list[int]) -> None:
    """The sources this node may claim (its config's): a temporary table on its connection,
    made again on a new connection."""

    def setup(store: Store) -> None:
        db = store.db
        with db.atomic():
            db.execute("CREATE TEMP TABLE IF NOT EXISTS mine (id BIGINT PRIMARY KEY)")
            db.execute("DELETE FROM mine")
            db.executemany("INSERT INTO mine (id) VALUES (?)", [(i,) for i in source_ids])

    setup(store)
    store.session["mine"] = setup


def claim_due(store: Store, node: Node, *, limit: int, lease: float, per_host: int) -> ClaimRound:
    """Claim up to ``limit`` of this node's due sources, most overdue first.

    A host's claims (over all nodes) stay under ``per_host``. Planned checks
    waiting in the store's batch are written first, so they count.
    """
    store.flush()
    db = store.db
    now = utcnow()
    stamp = to_db(now)
    with db.atomic():
        if db.is_postgres:
            db.execute("SELECT pg_advisory_xact_lock(?)", [CLAIM_LOCK])
        due = db.execute(
            "SELECT s.id, s.host FROM sources s JOIN mine m ON m.id = s.id"
            " WHERE s.active = 1 AND s.next_check_at <= ? ORDER BY s.next_check_at LIMIT ?",
            [stamp, max(limit * 4, 64)],
        ).fetchall()
        busy = Counter(
            dict(
                db.execute(
                    "SELECT host, count(*) FROM sources WHERE claimed_by IS NOT NULL"
                    " AND next_check_at > ? GROUP BY host",
                    [stamp],
                ).fetchall()
            )
        )
        chosen: list[int] = []
        for source_id, host in due:
            if len(chosen) >= limit:
                break
            if busy[host] < per_host:
                busy[host] += 1
                chosen.append(source_id)
        claimed = _take(db, node, chosen, to_db(now + timedelta(seconds=lease)))
        next_due = db.value(
            "SELECT min(s.next_check_at) FROM sources s JOIN mine m ON m.id = s.id"
            " WHERE s.active = 1 AND s.next_check_at > ?",
            [stamp],
        )
    for row in claimed:
        store.remember_state(row[0], FetchState(row[4], row[5], row[6], row[7], row[8]))
    found = [Claimed(row[0], row[1], row[2], row[3]) for row in claimed]
    return ClaimRound(found, next_due, len(due) - len(chosen))


def _take(db: Database, node: Node, ids: list[int], lease_until: str) -> list[Any]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    return list(
        db.execute(
            "UPDATE sources SET claimed_by = ?, claim = claim + 1, next_check_at = ?"
            f" WHERE id IN ({marks}) RETURNING id, name, claim, interval_now_seconds, url,"
            " etag, last_modified, body_sha256, consecutive_failures",
            [node.id, lease_until, *ids],
        ).fetchall()
    )


def unclaim(store: Store, source_id: int, claim: int, next_check_at: str | None) -> None:
    """Give a claimed source back without a result (shutting down, or removed meanwhile)."""
    store.db.execute(
        "UPDATE sources SET claimed_by = NULL, next_check_at = ? WHERE id = ? AND claim = ?",
        [next_check_at, source_id, claim],
    )


def describe(db: Database) -> str:
    """The database as shown in ``status`` (a URL's password masked)."""
    return mask(db.location)


#: Advisory lock keys of the chores one node at a time does (PostgreSQL).
CHORES = {"retention": 0x61676775}


def take_chore(db: Database, chore: str) -> bool:
    """Whether this node may do ``chore`` now (no other node is doing it); on SQLite, yes.

    PostgreSQL: a session lock on this node's connection, held until ``end_chore``
    (or until the connection ends, if the node dies).
    """
    if not db.is_postgres:
        return True
    return bool(db.value("SELECT pg_try_advisory_lock(?)", [CHORES[chore]]))


def end_chore(db: Database, chore: str) -> None:
    """Let another node do ``chore`` next time."""
    if db.is_postgres:
        db.execute("SELECT pg_advisory_unlock(?)", [CHORES[chore]])
