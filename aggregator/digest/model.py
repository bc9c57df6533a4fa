"""What a digest says, independent of how it is rendered.

``build_digest`` reads the changes of a time window through a ``Reader`` and
groups them by story (entry), newest activity first. Each story keeps every
headline it had in the window and, per change, either the text appended or a
condensed word diff of the text rewritten. Renderers only format this.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from aggregator.diff import Segment, appended_text, condense, word_diff
from aggregator.store.queries import ChangeRow, Reader, VersionRow

KINDS = ("new", "changed", "removed", "restored")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TEXT_FIELDS = ("content", "summary")


@dataclass(frozen=True, slots=True)
class TextEdit:
    """The edit of one text field: text added at the end, or a word diff."""

    field: str
    appended: str | None = None
    segments: tuple[Segment, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """One change of a story, ready to render."""

    change_id: int
    kind: str
    at: str
    fields: tuple[str, ...]
    edit: str | None
    version_before: int | None
    version_after: int | None
    title_before: str | None
    title_after: str | None
    text: str = ""  # the story's text, for new entries
    summary_html: str = ""  # as published, for new entries (sanitise before use)
    edits: tuple[TextEdit, ...] = ()
    moved_from: str = ""  # for ``moved``: the link under the old key
    moved_to: str = ""  # and under the new one

    @property
    def retitled(self) -> bool:
        """True when the headline changed."""
        return "title" in self.fields and self.title_before != self.title_after


@dataclass(slots=True)
class Story:
    """All changes of one entry within the window."""

    entry_id: int
    source: str
    key: str
    url: str
    title: str
    headlines: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def last_at(self) -> str:
        """When the latest change was detected."""
        return self.events[-1].at


@dataclass(slots=True)
class Digest:
    """The changes of a time window, grouped by story."""

    since: str
    until: str
    sources_polled: int
    counts: Counter[str]
    failing: list[dict[str, Any]]
    stories: list[Story]

    @property
    def empty(self) -> bool:
        """True when nothing changed in the window."""
        return not self.stories


def build_digest(
    reader: Reader,
    since: str,
    until: str,
    sources: list[str] | None = None,
    *,
    first_listing: bool = False,
) -> Digest:
    """Collect the changes detected in ``[since, until)`` (database times); the changes of
    sources' first listings (their baseline) only with ``first_listing``."""
    rows = reader.changes(since, until, sources, first_listing=first_listing)
    activity = reader.activity(since, until, sources)
    stories = group_stories(rows)
    ordered = sorted(stories, key=lambda s: (s.last_at, s.entry_id), reverse=True)
    return Digest(
        since=since,
        until=until,
        sources_polled=activity["sources_polled"],
        counts=Counter(row.kind for row in rows),
        failing=activity["failing"],
        stories=ordered,
    )


def group_stories(rows: list[ChangeRow]) -> list[Story]:
    """Group changes (oldest first) into one ``Story`` per entry, in first-seen order."""
    stories: dict[int, Story] = {}
    for row in rows:
        story = stories.get(row.entry_id)
        if story is None:
            story = stories[row.entry_id] = Story(
                row.entry_id, row.source, row.entry_key, plain(row.url), plain(row.current_title)
            )
        event = make_event(row)
        _add_headlines(story, event)
        story.events.append(event)
    return list(stories.values())


def _add_headlines(story: Story, event: Event) -> None:
    for title in (event.title_before, event.title_after):
        if title and (not story.headlines or story.headlines[-1] != title):
            story.headlines.append(title)


def plain(text: str | None) -> str:
    """Feed text without control characters, so it cannot drive a terminal."""
    return _CONTROL.sub("", text or "")


def make_event(row: ChangeRow) -> Event:
    """Turn one stored change into an ``Event`` with its text edits."""
    old, new = row.old, row.new
    event = Event(
        change_id=row.id,
        kind=row.kind,
        at=row.detected_at,
        fields=row.fields,
        edit=row.edit,
        version_before=old.version if old else None,
        version_after=new.version if new and (old is None or new.id != old.id) else None,
        title_before=plain(old.title) if old else None,
        title_after=plain(new.title) if new else None,
    )
    if row.kind == "new" and new is not None:
        return replace(event, text=plain(_main_text(new)), summary_html=new.summary or new.content)
    if row.kind == "moved" and old is not None and new is not None:
        event = replace(event, moved_from=plain(old.link), moved_to=plain(new.link))
    if old is not None and new is not None:
        return replace(event, edits=tuple(text_edits(old, new, row.fields, row.edit)))
    return event


def _main_text(version: VersionRow) -> str:
    return version.content_text or version.summary_text


def text_edits(
    old: VersionRow, new: VersionRow, fields: tuple[str, ...], edit: str | None
) -> list[TextEdit]:
    """The edits of the text fields in ``fields``; a duplicate of another field is left out."""
    edits: list[TextEdit] = []
    seen: set[tuple[str, str]] = set()
    for name in _TEXT_FIELDS:
        if name not in fields:
            continue
        before, after = plain(getattr(old, f"{name}_text")), plain(getattr(new, f"{name}_text"))
        if (before, after) in seen or before == after:
            continue
        seen.add((before, after))
        added = appended_text(before, after) if edit == "appended" else None
        if added is not None:
            edits.append(TextEdit(name, appended=added))
        else:
            edits.append(TextEdit(name, segments=tuple(condense(word_diff(before, after)))))
    return edits


def counts_line(digest: Digest) -> str:
    """The counts at the top of every digest."""
    polled = digest.sources_polled
    parts = [f"{polled} source{'s' if polled != 1 else ''} polled"]
    parts += [f"{digest.counts[kind]} {kind}" for kind in KINDS]
    if digest.counts["moved"]:  # only when a story moved: a rare event
        parts.append(f"{digest.counts['moved']} moved")
    parts.append(f"{len(digest.failing)} failing")
    return " · ".join(parts)


def describe(event: Event) -> str:
    """A short label such as ``changed title, summary (v1 → v2, appended)``."""
    label = event.kind
    if event.fields and event.kind in ("changed", "restored", "moved"):
        label += " " + ", ".join(event.fields)
    versions = [f"v{v}" for v in (event.version_before, event.version_after) if v is not None]
    details = [" → ".join(versions)] if versions else []
    if event.edit:
        details.append(event.edit)
    return f"{label} ({', '.join(details)})" if details else label


def short_time(at: str) -> str:
    """``YYYY-MM-DD HH:MM`` of a database time."""
    return at[:16]


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def text_time(at: str, today: date | None = None) -> str:
    """A database time for text output: ``09:00`` today, else ``Nov 27 09:00``.

    The year is added when it is not this year (``Nov 27 2025 09:00``). Both
    the time and ``today`` are UTC (``today`` defaults to the current date).
    """
    today = today or datetime.now(UTC).date()
    try:
        day = date.fromisoformat(at[:10])
    except ValueError:
        return at[:16]
    clock = at[11:16]
    if day == today:
        return clock
    label = f"{_MONTHS[day.month - 1]} {day.day}"
    if day.year != today.year:
        label += f" {day.year}"
    return f"{label} {clock}"


def window(digest: Digest) -> str:
    """The digest's time window for headings."""
    return f"{short_time(digest.since)} – {short_time(digest.until)} UTC"
