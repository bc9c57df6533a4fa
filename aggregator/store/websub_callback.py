"""What the hub's calls to the callback write: verifications of intent, deliveries.

The rows are described in ``store/websub.py``. Any node answers these calls, from the
database alone.
"""

from __future__ import annotations

from collections.abc import Callable

from aggregator.store import Store
from aggregator.store.db import Database
from aggregator.store.websub import (
    RENEW_AT,
    Subscription,
    by_token,
    later,
    poll_soon,
    update,
)
from aggregator.timeutil import now_db


def verify(
    store: Store,
    token: str,
    mode: str,
    topic: str,
    *,
    lease: float | None,
    reason: str,
    safety_poll: float,
    retry: Callable[[int], float],
) -> tuple[str, Subscription] | None:
    """Answer a verification of intent (or a denial) the hub sent to callback ``token``.

    Only a request we made is confirmed: a ``subscribe`` or ``unsubscribe`` for the
    topic of the row, while that request is pending. A confirmed subscription is live
    (its source's next check moves out to the safety poll); a denial puts its source
    back on polling at once.

    Returns:
        The row's new state and the row as it was, or ``None`` when we asked for no
        such thing (answer 404).
    """
    db = store.db
    store.flush()  # a planned check waiting to be written must not undo the one set here
    with db.atomic():
        row = by_token(db, token)
        if row is None or row.topic != topic or row.state in ("off", "none"):
            return None
        if mode in ("subscribe", "unsubscribe") and row.pending != mode:
            return None
        if mode == "subscribe":
            return _confirmed(store, row, lease, safety_poll), row
        if mode == "unsubscribe":
            update(db, row.id, {"state": "off", "pending": None, "next_action_at": None})
            return "off", row
        if mode == "denied":
            failures = row.failures + 1
            update(
                db,
                row.id,
                {
                    "state": "denied", "pending": None, "new_secret": None, "failures": failures,
                    "last_error": f"denied by the hub: {reason or 'no reason given'}",
                    "last_error_at": now_db(), "next_action_at": later(retry(failures)),
                },
            )  # fmt: skip
            poll_soon(db, row.source_id)
            return "denied", row
    return None


def _confirmed(store: Store, row: Subscription, lease: float | None, safety_poll: float) -> str:
    db = store.db
    seconds = int(lease if lease and lease > 0 else (row.lease_seconds or 0)) or 86400
    secret = row.new_secret or row.secret
    if secret != row.secret:  # deliveries signed with the old secret are refused from now on
        db.execute("DELETE FROM websub_seen WHERE source_id = ?", [row.source_id])
    update(
        db,
        row.id,
        {
            "state": "active", "secret": secret, "new_secret": None, "pending": None,
            "verified_at": now_db(), "lease_seconds": seconds, "expires_at": later(seconds),
            "next_action_at": later(seconds * RENEW_AT), "failures": 0, "last_error": None,
        },
    )  # fmt: skip
    db.execute(
        "UPDATE sources SET next_check_at = ?, schedule_reason = 'push: safety poll'"
        " WHERE id = ? AND claimed_by IS NULL AND next_check_at < ?",
        [later(safety_poll), row.source_id, later(safety_poll)],
    )
    return "active"


def take_mark(db: Database, source_id: int, mark: str) -> bool:
    """Remember a delivery's mark; False if it was seen already (a replay)."""
    cur = db.execute(
        "INSERT INTO websub_seen (source_id, mark, received_at) VALUES (?, ?, ?)"
        " ON CONFLICT (source_id, mark) DO NOTHING RETURNING id",
        [source_id, mark, now_db()],
    )
    return cur.fetchone() is not None


def drop_mark(db: Database, source_id: int, mark: str) -> None:
    """Forget a mark whose delivery could not be stored (the hub's retry is then welcome)."""
    db.execute("DELETE FROM websub_seen WHERE source_id = ? AND mark = ?", [source_id, mark])


def note_delivery(db: Database, sub_id: int) -> bool:
    """Count a stored delivery; True if it brought a ``silent`` subscription back to life."""
    cur = db.execute(
        "UPDATE websub SET deliveries = deliveries + 1, last_delivery_at = ?, state = 'active'"
        " WHERE id = ? AND state = 'silent' RETURNING id",
        [now_db(), sub_id],
    )
    if cur.fetchone() is not None:
        return True
    db.execute(
        "UPDATE websub SET deliveries = deliveries + 1, last_delivery_at = ? WHERE id = ?",
        [now_db(), sub_id],
    )
    return False


def note_rejected(db: Database, sub_id: int, error: str) -> None:
    """Count a delivery refused or ignored (a bad signature, a replay, a wrong type)."""
    db.execute(
        "UPDATE websub SET rejected = rejected + 1, last_error = ?, last_error_at = ? WHERE id = ?",
        [error, now_db(), sub_id],
    )
