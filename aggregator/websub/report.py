"""How ``aggregator sources`` says where push stands, for each source and overall."""

from __future__ import annotations

from typing import Any


def push_lines(rows: list[dict[str, Any]], callback: str | None, configured: bool) -> list[str]:
    """One line per source a hub was found for, and why push is off if it is.

    Args:
        rows: ``store.websub.report`` rows.
        callback: ``[websub] callback`` (None: push is off).
        configured: whether a config was read (without one, nothing is said of it).
    """
    lines = [
        f"{row['name']}: push {describe(row, callback)}" for row in rows if row["state"] != "none"
    ]
    if configured and callback is None:
        lines.append(
            "push (WebSub): off for every source: no [websub] callback is set, so no hub is"
            " asked and every source is polled (see docs/websub.md)"
        )
    return lines


def describe(row: dict[str, Any], callback: str | None) -> str:
    """Where one source's subscription stands, in a few words."""
    state, hub = row["state"], row["hub"]
    when = (row["next_action_at"] or "")[:16]
    if state == "off":
        return 'off (push = "off")'
    if callback is None:
        return f"off: {hub} offers it, but no [websub] callback is set"
    if state == "active":
        until = (row["expires_at"] or "")[:16]
        return f"on via {hub} (lease until {until} UTC; {row['deliveries']} deliveries)"
    if state == "silent":
        return f"silent: {hub} missed a change; polled as usual until it pushes again"
    if state in ("discovered", "requested"):
        return f"asking {hub} (waiting for its verification)" if row["pending"] else f"to ask {hub}"
    error = row["last_error"] or state
    return f"{state}: {error}; polled; asking again at {when} UTC"
