"""Machine-readable digests: JSON, and an Atom feed with one entry per change.

The Atom feed lets anyone subscribe to the changes in a feed reader: each
change is its own ``<entry>`` (stable id per change) carrying its diff as
escaped HTML. ``ElementTree`` escapes all text, so feed text cannot break out.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from aggregator import __version__
from aggregator.diff import render_markers
from aggregator.digest.model import Digest, Event, Story, describe, window
from aggregator.digest.page import event_html, safe_url

ATOM_NS = "http://www.w3.org/2005/Atom"


def digest_dict(digest: Digest) -> dict[str, Any]:
    """The digest as plain JSON-ready data (the ``--format json`` schema)."""
    return {
        "since": digest.since,
        "until": digest.until,
        "counts": {"sources_polled": digest.sources_polled, **_counts(digest)},
        "failing": [dict(f) for f in digest.failing],
        "stories": [_story(s) for s in digest.stories],
    }


def _counts(digest: Digest) -> dict[str, int]:
    return {k: digest.counts[k] for k in ("new", "changed", "removed", "restored")}


def _story(story: Story) -> dict[str, Any]:
    return {
        "entry_id": story.entry_id,
        "source": story.source,
        "key": story.key,
        "url": story.url,
        "title": story.title,
        "headlines": list(story.headlines),
        "changes": [_event(e) for e in story.events],
    }


def _event(event: Event) -> dict[str, Any]:
    return {
        "id": event.change_id,
        "kind": event.kind,
        "detected_at": event.at,
        "fields": list(event.fields),
        "edit": event.edit,
        "version": {"before": event.version_before, "after": event.version_after},
        "title": {"before": event.title_before, "after": event.title_after},
        "text": event.text or None,
        "edits": [
            {
                "field": edit.field,
                "appended": edit.appended,
                "diff": None if edit.appended is not None else render_markers(list(edit.segments)),
            }
            for edit in event.edits
        ],
    }


def render_json(digest: Digest) -> str:
    """The digest as indented JSON."""
    return json.dumps(digest_dict(digest), ensure_ascii=False, indent=2) + "\n"


def _rfc3339(at: str) -> str:
    return at.replace(" ", "T")[:19] + "Z"


def render_atom(digest: Digest, *, feed_id: str = "urn:aggregator:changes") -> str:
    """The digest as an Atom 1.0 feed, newest change first."""
    ET.register_namespace("", ATOM_NS)
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _sub(feed, "title", f"Changes {window(digest)}")
    _sub(feed, "id", feed_id)
    events = [(s, e) for s in digest.stories for e in s.events]
    events.sort(key=lambda pair: (pair[1].at, pair[1].change_id), reverse=True)
    _sub(feed, "updated", _rfc3339(events[0][1].at if events else digest.until))
    author = _sub(feed, "author")
    _sub(author, "name", "aggregator")
    _sub(feed, "generator", "aggregator", version=__version__)
    for story, event in events:
        _entry(feed, story, event, feed_id)
    body = ET.tostring(feed, encoding="unicode")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n"


def _entry(feed: ET.Element, story: Story, event: Event, feed_id: str) -> None:
    entry = _sub(feed, "entry")
    _sub(entry, "id", f"{feed_id}:{event.change_id}")
    title = event.title_after or event.title_before or story.title
    _sub(entry, "title", f"{event.kind}: {title}")
    _sub(entry, "updated", _rfc3339(event.at))
    url = safe_url(story.url)
    if url:
        _sub(entry, "link", href=url)
    _sub(entry, "category", term=story.source)
    _sub(entry, "summary", f"[{story.source}] {describe(event)}")
    _sub(entry, "content", event_html(event), type="html")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element
