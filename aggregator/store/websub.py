"""WebSub subscriptions in the database (``websub``, ``websub_seen``; migration 0012).

One row per source that named a hub. ``state`` is where its subscription stands:

* ``discovered``: a hub is known, no subscription asked for yet;
* ``requested``: asked for, waiting for the hub's verification of intent;
* ``active``: verified, and its lease runs until ``expires_at``: the source is *live*
  (polled only at the safety poll);
* ``silent``: verified, but a poll found a change the hub did not push: polled as usual
  until the hub delivers again;
* ``refused`` / ``denied`` / ``expired``: the hub said no, denied it later, or the lease
  lapsed: polled as usual, asked again at ``next_action_at``;
* ``off``: unsubscribed (``push = "off"``); ``none``: the publisher names no hub now.

``pending`` is the request waiting for verification (``subscribe`` or ``unsubscribe``):
a verification is answered only for a request we made. ``secret`` signs deliveries;
``new_secret`` is the one a pending request sent (each renewal rotates it; both are
accepted until the hub verifies). ``next_action_at`` is when some node should act on
the row next (subscribe, renew, give up waiting, expire); the node doing it holds
``busy_by`` until ``busy_until``. Any node answers the hub's calls, from these rows
(``store/websub_callback.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from aggregator.store import Store
from aggregator.store.db import Database
from aggregator.timeutil import from_db, now_db, to_db, utcnow

#: States in which a hub may still deliver (and deliveries are accepted).
SUBSCRIBED = ("active", "silent")
#: States in which the next step is to ask the hub (again).
TO_ASK = ("discovered", "refused", "denied", "expired")
#: A verified lease is renewed once this share of it has passed.
RENEW_AT = 0.8


@dataclass(frozen=True, slots=True)
class Subscription:
    """One ``websub`` row."""

    id: int
    source_id: int
    state: str
    hub: str | None
    topic: str | None
    token: str | None
    secret: str | None
    new_secret: str | None
    pending: str | None
    requested_at: str | None
    verified_at: str | None
    lease_seconds: int | None
    expires_at: str | None
    next_action_at: str | None
    failures: int
    last_error: str | None
    deliveries: int
    last_delivery_at: str | None

    def expires_in(self) -> float | None:
        """Seconds until the lease lapses (negative once it has), if verified."""
        if self.expires_at is None:
            return None
        return (from_db(self.expires_at) - utcnow()).total_seconds()


_COLUMNS = ", ".join(f.name for f in fields(Subscription))


def _one(db: Database, sql: str, params: list[Any]) -> Subscription | None:
    row = db.execute(sql, params).fetchone()
    return None if row is None else Subscription(*row)


def by_source(db: Database, source_id: int) -> Subscription | None:
    """The subscription row of ``source_id``, if any."""
    return _one(db, f"SELECT {_COLUMNS} FROM websub WHERE source_id = ?", [source_id])


def by_token(db: Database, token: str) -> Subscription | None:
    """The subscription whose callback path is ``token``, if any."""
    return _one(db, f"SELECT {_COLUMNS} FROM websub WHERE token = ?", [token])


def update(
    db: Database, sub_id: int, sets: dict[str, Any], where: str = "", params: tuple[Any, ...] = ()
) -> bool:
    """Set ``sets`` on row ``sub_id`` (if ``where`` also holds); True if it did."""
    sets = {**sets, "updated_at": now_db()}
    assignments = ", ".join(f"{k} = ?" for k in sets)
    cur = db.execute(
        f"UPDATE websub SET {assignments} WHERE id = ?{where} RETURNING id",
        [*sets.values(), sub_id, *params],
    )
    return cur.fetchone() is not None


def later(seconds: float) -> str:
    """The database time ``seconds`` from now."""
    return to_db(utcnow() + timedelta(seconds=seconds))


# -- what the daemon keeps in memory ------------------------------------------------------


def discovered(db: Database) -> dict[int, tuple[str | None, str | None]]:
    """The hub and topic recorded for each source (the ``none`` state: no hub)."""
    return {
        row[0]: (row[1], row[2]) if row[3] != "none" else (None, None)
        for row in db.execute("SELECT source_id, hub, topic, state FROM websub").fetchall()
    }


def live(db: Database) -> dict[int, float]:
    """The sources with a live subscription, and when each lease lapses (epoch seconds)."""
    rows = db.execute(
        "SELECT source_id, expires_at FROM websub WHERE state = 'active' AND expires_at > ?"
        " AND (pending IS NULL OR pending <> 'unsubscribe')",
        [now_db()],
    ).fetchall()
    return {row[0]: from_db(row[1]).timestamp() for row in rows}


# -- discovery ----------------------------------------------------------------------------


def note_discovery(
    db: Database, source_id: int, hub: str | None, topic: str | None, *, token: str, ask: bool
) -> str | None:
    """Record the hub and topic a read of the source named; the row's new state if it changed.

    A new hub or topic starts a new subscription (a new callback ``token``; the old one's
    deliveries are refused from now on); no hub any more ends it (polling takes over).
    ``ask``: push may be asked for now (a callback is configured, ``push = "auto"``).
    """
    with db.atomic():
        row = by_source(db, source_id)
        if row is not None and row.state != "none" and (row.hub, row.topic) == (hub, topic):
            return None
        if hub is None:
            if row is None or row.state == "none":
                return None
            update(db, row.id, {"state": "none", "pending": None, "next_action_at": None})
            return "none"
        sets: dict[str, Any] = {
            "state": "discovered", "hub": hub, "topic": topic, "token": token, "secret": None,
            "new_secret": None, "pending": None, "requested_at": None, "verified_at": None,
            "lease_seconds": None, "expires_at": None, "failures": 0, "last_error": None,
            "next_action_at": now_db() if ask else None,
        }  # fmt: skip
        db.execute("DELETE FROM websub_seen WHERE source_id = ?", [source_id])
        if row is None:
            sets |= {"source_id": source_id, "updated_at": now_db()}
            names = ", ".join(sets)
            db.execute(
                f"INSERT INTO websub ({names}) VALUES ({', '.join('?' * len(sets))})",
                list(sets.values()),
            )
        else:
            update(db, row.id, sets)
    return "discovered"


def wake_waiting(db: Database) -> int:
    """Make every subscription that waits to be asked for due now (a callback was set)."""
    cur = db.execute(
        "UPDATE websub SET next_action_at = ? WHERE next_action_at IS NULL AND state IN"
        f" ({', '.join('?' * len(TO_ASK))}) RETURNING id",
        [now_db(), *TO_ASK],
    )
    return len(cur.fetchall())


# -- the work of subscribing, claimed by one node at a time ---------------------------------


def claim_due(db: Database, node_id: str, *, limit: int, busy_for: float) -> list[Subscription]:
    """Claim up to ``limit`` of this node's subscriptions that are due for an action.

    Only sources in this node's config (the ``mine`` table of ``cluster.set_mine``).
    """
    now = now_db()
    ids = [
        row[0]
        for row in db.execute(
            "SELECT w.id FROM websub w JOIN mine m ON m.id = w.source_id"
            " WHERE w.next_action_at <= ? AND (w.busy_until IS NULL OR w.busy_until < ?)"
            " ORDER BY w.next_action_at LIMIT ?",
            [now, now, limit],
        ).fetchall()
    ]
    claimed = []
    for sub_id in ids:  # one by one: a row another node took meanwhile is skipped
        row = _one(
            db,
            f"UPDATE websub SET busy_by = ?, busy_until = ? WHERE id = ? AND next_action_at <= ?"
            f" AND (busy_until IS NULL OR busy_until < ?) RETURNING {_COLUMNS}",
            [node_id, later(busy_for), sub_id, now, now],
        )
        if row is not None:
            claimed.append(row)
    return claimed


def due_now(db: Database, source_ids: list[int]) -> None:
    """Make the subscriptions of ``source_ids`` due now (their config changed)."""
    db.executemany(
        "UPDATE websub SET next_action_at = ? WHERE source_id = ? AND pending IS NULL"
        " AND state NOT IN ('off', 'none')",
        [(now_db(), i) for i in source_ids],
    )


def due_never(db: Database, sub_id: int) -> None:
    """Nothing more to do for this subscription until something changes."""
    db.execute("UPDATE websub SET next_action_at = NULL WHERE id = ?", [sub_id])


def next_due(db: Database) -> str | None:
    """When this node's next subscription action is due (``None``: nothing planned)."""
    return db.value(
        "SELECT min(w.next_action_at) FROM websub w JOIN mine m ON m.id = w.source_id"
        " WHERE w.next_action_at IS NOT NULL"
    )


def release(db: Database, sub_id: int, node_id: str) -> None:
    """End this node's hold on a subscription row."""
    db.execute(
        "UPDATE websub SET busy_by = NULL, busy_until = NULL WHERE id = ? AND busy_by = ?",
        [sub_id, node_id],
    )


def release_node(db: Database, node_id: str) -> None:
    """A stopping node gives back the rows it was acting on (another may take them now)."""
    db.execute("UPDATE websub SET busy_by = NULL, busy_until = NULL WHERE busy_by = ?", [node_id])


def begin_request(
    db: Database, sub: Subscription, mode: str, *, token: str, secret: str | None, wait: float
) -> Subscription | None:
    """Note a request about to go to the hub (before it goes: a hub may verify at once).

    ``wait``: seconds the hub has to verify it. A first subscription becomes
    ``requested``; a renewal stays ``active`` (its lease still runs).
    """
    state = sub.state if sub.state in SUBSCRIBED else "requested"
    if mode == "unsubscribe":
        state = sub.state
    deadline = later(wait)
    if sub.expires_at is not None and sub.state in SUBSCRIBED:
        deadline = min(deadline, sub.expires_at)
    sets = {
        "state": state, "pending": mode, "token": token, "new_secret": secret,
        "requested_at": now_db(), "next_action_at": deadline,
    }  # fmt: skip
    if not update(db, sub.id, sets):
        return None
    return by_source(db, sub.source_id)


def request_failed(
    db: Database, sub: Subscription, error: str, *, retry: Callable[[int], float]
) -> str | None:
    """A request the hub refused, or did not verify in time; the row's new state.

    Nothing changes if the hub verified it meanwhile. A renewal's subscription stays
    live until its lease lapses; a first request is ``refused``. ``retry(failures)``
    gives the wait before asking again.
    """
    with db.atomic():
        now = by_source(db, sub.source_id)
        if now is None or now.pending is None or now.requested_at != sub.requested_at:
            return None
        failures = now.failures + 1
        wait = retry(failures)
        state = now.state
        if now.pending == "unsubscribe":
            state, at = "off", None
        elif now.state in SUBSCRIBED and now.expires_at is not None:
            at = min(later(wait), now.expires_at)
        else:
            state, at = "refused", later(wait)
        update(
            db,
            now.id,
            {
                "state": state, "pending": None, "new_secret": None, "failures": failures,
                "last_error": error, "last_error_at": now_db(), "next_action_at": at,
            },
        )  # fmt: skip
    return state


def expire(db: Database, sub: Subscription, *, retry: Callable[[int], float]) -> bool:
    """The lease lapsed unrenewed: the source is polled again; ask again after ``retry``.

    Returns False if the row was renewed (or changed) meanwhile.
    """
    failures = sub.failures + 1
    sets = {
        "state": "expired", "pending": None, "new_secret": None, "failures": failures,
        "last_error": "the lease lapsed before a renewal was verified",
        "last_error_at": now_db(), "next_action_at": later(retry(failures)),
    }  # fmt: skip
    where = " AND state IN ('active', 'silent') AND expires_at <= ?"
    return update(db, sub.id, sets, where, (now_db(),))


def switch_off(db: Database, source_id: int) -> None:
    """``push = "off"`` with nothing to unsubscribe from: nothing more is asked."""
    db.execute(
        "UPDATE websub SET state = 'off', pending = NULL, next_action_at = NULL, updated_at = ?"
        " WHERE source_id = ? AND state <> 'off'",
        [now_db(), source_id],
    )


def mark_silent(db: Database, source_id: int, error: str) -> bool:
    """A poll found a change the hub did not push: poll the source as usual until the hub
    delivers again. True if the subscription was live."""
    cur = db.execute(
        "UPDATE websub SET state = 'silent', last_error = ?, last_error_at = ?, updated_at = ?"
        " WHERE source_id = ? AND state = 'active' RETURNING id",
        [error, now_db(), now_db(), source_id],
    )
    return cur.fetchone() is not None


def poll_soon(db: Database, source_id: int) -> None:
    """Make the source due now (push ended for it), unless a node is polling it."""
    now = now_db()
    db.execute(
        "UPDATE sources SET next_check_at = ?, schedule_reason = 'push ended: polling'"
        " WHERE id = ? AND claimed_by IS NULL AND next_check_at > ?",
        [now, source_id, now],
    )


def poll_now(store: Store, source_id: int) -> None:
    """``poll_soon`` after writing the store's planned checks (so none undoes it)."""
    store.flush()
    poll_soon(store.db, source_id)


# -- reading ------------------------------------------------------------------------------


def report(db: Database) -> list[dict[str, Any]]:
    """Each source's push state, for ``aggregator sources`` (by source name)."""
    return db.rows(
        "SELECT s.name, w.state, w.hub, w.topic, w.pending, w.expires_at, w.next_action_at,"
        " w.failures, w.last_error, w.deliveries, w.last_delivery_at, w.rejected"
        " FROM websub w JOIN sources s ON s.id = w.source_id ORDER BY s.name"
    )
