"""The change event: the JSON object every sink receives (a public interface).

Built once, when the change is stored, and kept in the ``outbox`` table, so a
re-delivery sends exactly the same bytes with the same ``id``.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from aggregator.diff import short_diff, word_diff
from aggregator.models import Change
from aggregator.normalize import canonical_url

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

    A ``moved`` change (the story is listed under a new key) also carries
    ``moved: {from: {key, url}, to: {key, url}}``; ``entry.key`` is the new key.

    Args:
        change: the detected change.
        source: ``name``, ``url`` and ``kind`` of the source.
        entry_id: the entry's row id.
        versions: version numbers before and after (``None`` where there is none).
        detected_at: database timestamp of detection.
    """
    before = change.previous.texts if change.previous else {}
    after = change.snapshot.texts if change.snapshot else before
    link = change.snapshot.item.link if change.snapshot else ""
    # tracking parameters removed (the compared link), but a post's #anchor kept
    url = canonical_url(link, keep_fragment=True) if "#" in link else after.get("link", "")
    event = {
        "id": new_event_id(),
        "type": "change",
        "kind": change.kind,
        "source": source,
        "entry": {"id": entry_id, "key": change.key, "url": url},
        "title": {"before": before.get("title") if before else None, "after": after.get("title")},
        "fields": list(change.fields),
        "edit": change.edit,
        "diff": text_diff(before, after, change.fields),
        "words_changed": words_changed(before, after, change.fields),
        "excerpt": excerpt(after),
        "version": {"before": versions[0], "after": versions[1]},
        "detected_at": detected_at,
    }
    if change.kind == "moved" and change.previous is not None:
        event["moved"] = {
            "from": {"key": change.previous.key, "url": before.get("link", "")},
            "to": {"key": change.key, "url": url},
        }
    return event


def text_diff(before: dict[str, str], after: dict[str, str], fields: tuple[str, ...]) -> str:
    """A short word diff of the most telling changed field (content, summary, title)."""
    for name in ("content", "summary", "title"):
        if name in fields:
            return short_diff(before.get(name, ""), after.get(name, ""))
    return ""


def excerpt(texts: dict[str, str], limit: int = 300) -> str:
    """The start of the entry's text (content, else summary), cut at ``limit`` characters."""
    text = texts.get("content") or texts.get("summary") or ""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def words_changed(before: dict[str, str], after: dict[str, str], fields: tuple[str, ...]) -> int:
    """Words inserted plus words deleted in the title and the most telling text field."""
    if not before:
        return 0
    names = ["title"] if "title" in fields else []
    names += [n for n in ("content", "summary") if n in fields][:1]
    count = 0
    for name in names:
        for seg in word_diff(before.get(name, ""), after.get(name, "")):
            if seg.op != "equal":
                count += len(seg.text.split())
    return count


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


def fold_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold several change events of one story into one (sinks with ``batch``).

    The result is a ``change`` event whose ``id`` is derived from the folded
    ids (so a re-delivery carries the same id), ``folded`` lists those ids,
    ``title``/``version`` span first-before to last-after, ``fields`` is the
    union and ``diff`` joins the diffs. A story that moved (and was not new
    in the batch) stays ``moved``, from the first old key to the last new one.
    """
    if len(events) == 1:
        return events[0]
    first, last = events[0], events[-1]
    ids = [e["id"] for e in events]
    fields = list(dict.fromkeys(f for e in events for f in e.get("fields", [])))
    kind = "new" if first.get("kind") == "new" else last.get("kind")
    moves = [e["moved"] for e in events if e.get("moved")]
    extra: dict[str, Any] = {}
    if moves and kind != "new":
        kind = "moved"
        extra["moved"] = {"from": moves[0]["from"], "to": moves[-1]["to"]}
    return {
        **last,
        **extra,
        "id": hashlib.sha256(".".join(ids).encode()).hexdigest()[:32],
        "kind": kind,
        "title": {"before": first["title"]["before"], "after": last["title"]["after"]},
        "fields": fields,
        "diff": "\n…\n".join(e["diff"] for e in events if e.get("diff")),
        "words_changed": sum(e.get("words_changed", 0) for e in events),
        "version": {"before": first["version"]["before"], "after": last["version"]["after"]},
        "folded": ids,
    }
