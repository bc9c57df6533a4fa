"""What the templates and JSON endpoints show, built from the digest's model.

A change becomes the digest's ``Event`` (``make_event``: headline, appended text or a
condensed word diff) and renders with the digest's ``event_html``, so the page, the HTML
digest and the Atom feed show an edit the same way. A version's permalink shows the full
word diff (``aggregator.diff``) against the version before it.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar, cast

from jinja2 import Environment
from markupsafe import Markup

from aggregator.diff import render_html, render_markers, word_diff
from aggregator.digest.model import Event, describe, make_event, plain, short_time
from aggregator.digest.page import event_html
from aggregator.sanitize import clean_html, safe_link
from aggregator.store.browse import Entry
from aggregator.store.queries import ChangeRow, VersionRow

T = TypeVar("T")


class _Cache:
    """A small thread-safe LRU by change id: a stored change never changes, so its
    ``Event`` (word diffs) and its HTML are computed once, not on every page view."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: int, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return cast(T, self._items[key])
        value = make()
        with self._lock:
            self._items[key] = value
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


_EVENTS = _Cache(20_000)
_HTML = _Cache(20_000)


def event_markup(event: Event) -> Markup:
    """The digest's HTML of one change (feed text escaped, feed HTML sanitised)."""
    html_text = _HTML.get(event.change_id, lambda: event_html(event))
    return Markup(html_text)  # noqa: S704 - event_html escapes and sanitises


def diff_markup(old: str, new: str) -> Markup:
    """The full word diff of two texts with ``<del>``/``<ins>``, every piece escaped."""
    return Markup(render_html(word_diff(plain(old), plain(new))))  # noqa: S704


def sanitized(markup: str) -> Markup:
    """Publisher HTML through the one sanitiser."""
    return Markup(clean_html(markup))  # noqa: S704 - clean_html is nh3 with an allow-list


def snippet_markup(snippet: str) -> Markup:
    """An FTS snippet (matches between \\x02 and \\x03) escaped, matches in ``<mark>``."""
    escaped = html.escape(plain(snippet.replace("\x02", "\ufff0").replace("\x03", "\ufff1")))
    return Markup(escaped.replace("\ufff0", "<mark>").replace("\ufff1", "</mark>"))  # noqa: S704


def when(at: str | None) -> str:
    """A database time as ``YYYY-MM-DD HH:MM`` (UTC), or an em dash."""
    return short_time(at) if at else "—"


TEMPLATE_HELPERS: dict[str, Any] = {
    "event_markup": event_markup,
    "diff_markup": diff_markup,
    "sanitized": sanitized,
    "snippet_markup": snippet_markup,
    "safe_link": safe_link,
    "when": when,
    "describe": describe,
    "plain": plain,
}


def event(row: ChangeRow) -> Event:
    """The digest's ``Event`` of a change (cached by change id)."""
    return _EVENTS.get(row.id, lambda: make_event(row))


def events(rows: list[ChangeRow]) -> list[tuple[ChangeRow, Event]]:
    """Each change with its digest ``Event``."""
    return [(row, event(row)) for row in rows]


def live_payload(templates: Environment, row: ChangeRow) -> dict[str, Any]:
    """A new change for the live stream: its list row and its story-page item, as HTML."""
    ev = event(row)
    context = {"row": row, "event": ev}
    return {
        "id": row.id,
        "entry_id": row.entry_id,
        "source": row.source,
        "kind": row.kind,
        "title": ev.title_after or ev.title_before or plain(row.current_title),
        "story": f"{templates.globals['root']}/story/{row.entry_id}",
        "row": templates.get_template("_change_row.html").render(context),
        "event": templates.get_template("_event.html").render(context),
    }


# -- JSON --------------------------------------------------------------------


def change_json(row: ChangeRow, root: str) -> dict[str, Any]:
    """One change as JSON: what changed, the versions, and a marker diff of each text edit."""
    ev = event(row)
    return {
        "id": row.id,
        "detected_at": row.detected_at,
        "source": row.source,
        "kind": row.kind,
        "fields": list(row.fields),
        "edit": row.edit,
        "entry_id": row.entry_id,
        "story": f"{root}/story/{row.entry_id}",
        "url": safe_link(row.url) or None,
        "title": {"before": ev.title_before, "after": ev.title_after},
        "version": {"before": ev.version_before, "after": ev.version_after},
        "edits": [
            {
                "field": edit.field,
                "appended": edit.appended,
                "diff": None if edit.appended is not None else render_markers(list(edit.segments)),
            }
            for edit in ev.edits
        ],
    }


def entry_json(entry: Entry, root: str) -> dict[str, Any]:
    """One entry (story) as JSON."""
    return {
        "id": entry.id,
        "source": entry.source,
        "key": entry.key,
        "url": safe_link(entry.url) or None,
        "title": plain(entry.title),
        "versions": entry.version_count,
        "first_seen_at": entry.first_seen_at,
        "last_seen_at": entry.last_seen_at,
        "removed_at": entry.removed_at,
        "permalink": f"{root}/story/{entry.id}",
    }


def version_json(version: VersionRow, root: str, *, full: bool = False) -> dict[str, Any]:
    """One version as JSON; ``full`` adds its text and its sanitised HTML."""
    out: dict[str, Any] = {
        "version": version.version,
        "seen_at": version.seen_at,
        "title": plain(version.title),
        "link": safe_link(version.link) or None,
        "permalink": f"{root}/story/{version.entry_id}/v/{version.version}",
    }
    if full:
        out.update(
            author=plain(version.author),
            summary_text=plain(version.summary_text),
            content_text=plain(version.content_text),
            summary_html=clean_html(version.summary),
            content_html=clean_html(version.content),
        )
    return out


def headline_history(versions: list[VersionRow]) -> list[tuple[VersionRow, str]]:
    """Each headline the story had, with the version that introduced it (oldest first)."""
    out: list[tuple[VersionRow, str]] = []
    for version in versions:
        title = plain(version.title)
        if not out or out[-1][1] != title:
            out.append((version, title))
    return out
