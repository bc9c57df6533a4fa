"""Human-readable renderings of events, shared by the stdout, email and apprise sinks."""

from __future__ import annotations

from typing import Any

_KINDS = {
    "new": "New", "changed": "Changed", "removed": "Removed", "restored": "Restored",
    "moved": "Moved",
}  # fmt: skip


def headline(event: dict[str, Any]) -> str:
    """The story's current headline (the one before, for a removal)."""
    title = event.get("title") or {}
    return title.get("after") or title.get("before") or event.get("entry", {}).get("key", "")


def subject(event: dict[str, Any]) -> str:
    """One line naming the story and the kind of change, e.g. ``Changed: Talks end (world)``."""
    kind = event.get("type")
    source = event.get("source", {}).get("name", "")
    if kind == "change":
        label = _KINDS.get(event.get("kind", ""), str(event.get("kind")))
        if folded := event.get("folded"):
            label += f" ({len(folded)} updates)"
        return f"{label}: {headline(event)} ({source})"
    if kind == "source.failing":
        return f"Source failing: {source} ({event.get('failures')} failures in a row)"
    if kind == "source.recovered":
        return f"Source recovered: {source}"
    if kind == "digest":
        return str(event.get("title", "Digest"))
    return f"{kind}: {event.get('id')}"


def text(event: dict[str, Any]) -> str:
    """A plain-text body: what changed, where, and the word diff."""
    kind = event.get("type")
    if kind == "digest":
        return str(event.get("text", ""))
    lines = [subject(event)]
    if kind == "change":
        title = event.get("title") or {}
        if title.get("before") and title.get("before") != title.get("after"):
            lines.append(f"Was: {title['before']}")
        if url := event.get("entry", {}).get("url"):
            lines.append(url)
        if moved := event.get("moved"):
            lines.append(f"Moved from: {moved['from']['url'] or moved['from']['key']}")
        if fields := event.get("fields"):
            lines.append(f"Fields changed: {', '.join(fields)}")
        if diff := event.get("diff"):
            lines += ["", diff]
    elif kind and kind.startswith("source."):
        lines.append(event.get("source", {}).get("url", ""))
        if error := event.get("error"):
            lines.append(f"Last error: {error}")
    lines += ["", f"Event {event.get('id')} at {event.get('detected_at', '')} UTC"]
    return "\n".join(lines)


def line(event: dict[str, Any]) -> str:
    """One line for a terminal (a digest prints its title and then its text)."""
    if event.get("type") == "digest":
        return f"{subject(event)}\n{event.get('text', '')}"
    url = event.get("entry", {}).get("url") or event.get("source", {}).get("url", "")
    when = event.get("detected_at", "")
    return f"{when} {subject(event)} {url}".strip()
