"""The change event: the JSON object every sink receives (a public interface).

Built once, when the change is stored, and kept in the ``outbox`` table, so a
re-delivery sends exactly the same bytes with the same ``id``.
"""

from __future__ import annotations

import uuid
from typing import Any

from aggregator.diff import short_diff
from aggregator.models import Change

EVENT_TYPES = ("change", "source.failing", "source.recovered", "digest")


def new_event_id() -> str:
    """A fresh, unique event id (the receivers' idempotency key)."""
    return uuid.uuid4().hex


def change_event(
    change: Change,
    *,
    source: dict[str, Any],
    entry_id: int,
    versions: tuple[int | None, int | None],
    detected_at: str,
) -> dict[str, Any]:
    """The event for one detected change.

    Args:
        change: the detected change.
        source: ``name``, ``url`` and ``kind`` of the source.
        entry_id: the entry's row id.
        versions: version numbers before and after (``None`` where there is none).
        detected_at: database timestamp of detection.
    """
    before = change.previous.texts if change.previous else {}
    after = change.snapshot.texts if change.snapshot else before
    url = (change.snapshot.item.link if change.snapshot else "") or before.get("link", "")
    return {
        "id": new_event_id(),
        "type": "change",
        "kind": change.kind,
        "source": source,
        "entry": {"id": entry_id, "key": change.key, "url": url},
        "title": {"before": before.get("title") if before else None, "after": after.get("title")},
        "fields": list(change.fields),
        "edit": change.edit,
        "diff": text_diff(before, after, change.fields),
        "version": {"before": versions[0], "after": versions[1]},
        "detected_at": detected_at,
    }


def text_diff(before: dict[str, str], after: dict[str, str], fields: tuple[str, ...]) -> str:
    """A short word diff of the most telling changed field (content, summary, title)."""
    for name in ("content", "summary", "title"):
        if name in fields:
            return short_diff(before.get(name, ""), after.get(name, ""))
    return ""


def source_event(
    kind: str, *, source: dict[str, Any], failures: int, error: str | None, at: str
) -> dict[str, Any]:
    """A ``source.failing`` or ``source.recovered`` event."""
    return {
        "id": new_event_id(),
        "type": kind,
        "source": source,
        "failures": failures,
        "error": error,
        "detected_at": at,
    }
