"""RSS 0.9x/1.0/2.0, Atom (through feedparser) and JSON Feed 1.0/1.1.

feedparser is called with its sanitiser and relative-URI rewriting off: we
store what the publisher sent and sanitise once, where HTML is rendered
(digests, notifications). That halves the parse cost.

Before any XML parser sees the bytes, invalid UTF-8 sequences of a UTF-8
document are replaced (``encoding``) and a document declaring XML entities is
refused (``xmlsafe``). A body that yields nothing is a ``ParseError``, never an
empty result: an empty body, XML that is not well-formed and gives no entry.
A well-formed feed with no items is a valid, empty result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar
from xml.sax import SAXParseException

import feedparser
from pydantic import BaseModel, ConfigDict, Field

from aggregator.errors import ParseError
from aggregator.models import Item, Parsed
from aggregator.normalize import item_key, unique_keys
from aggregator.parse import fastrss, hublinks, xmlsafe
from aggregator.parse.encoding import decode_json, repair_utf8
from aggregator.timeutil import iso_to_db, struct_to_db

# bozo exceptions that do not mean data was lost
_HARMLESS_BOZO = (
    feedparser.CharacterEncodingOverride,
    feedparser.NonXMLContentType,
)


#: The most entries read from one document (``[limits] max_entries``), set by the
#: pipeline. Entries past it are cut from the bytes *before* parsing, so a
#: 200,000-item document costs what ``max_entries`` items cost.
ENTRY_CAP: ContextVar[int | None] = ContextVar("entry_cap", default=None)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # NUL and friends: never text
_ENTRY_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s/>]")


class FeedOptions(BaseModel):
    """Keys a ``kind = "feed"`` source may set besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Also fetch each entry's linked article and version its text (``aggregator.follow``).
    follow_links: bool = False
    #: Most articles fetched per poll of the feed.
    follow_limit: int = Field(default=10, ge=1, le=1000)


class FeedParser:
    """``kind = "feed"``: one entry per feed item."""

    kind: ClassVar[str] = "feed"
    Options: ClassVar[type[BaseModel]] = FeedOptions

    def parse(
        self, body: bytes, *, url: str, headers: Mapping[str, str], options: Any = None
    ) -> Parsed:
        """Parse an RSS, Atom or JSON Feed document."""
        if not body.strip():
            raise ParseError("empty response body: expected a feed")
        if looks_like_json(body, headers):
            return parse_json_feed(body, url=url)
        return parse_xml_feed(body, url=url, headers=headers)


def looks_like_json(body: bytes, headers: Mapping[str, str]) -> bool:
    """True for a JSON body (by content type or first character)."""
    ctype = headers.get("content-type", "").lower()
    return "json" in ctype or body.lstrip()[:1] == b"{"


def parse_xml_feed(body: bytes, *, url: str, headers: Mapping[str, str]) -> Parsed:
    """RSS/Atom through feedparser, with the final URL as base for relative links."""
    if not body.strip():
        raise ParseError("empty response body: expected a feed")
    hdrs = {k.lower(): v for k, v in headers.items()}
    hdrs["content-location"] = url
    body, repaired = repair_utf8(body, hdrs)
    body, cut_warning = cut_entries(body, ENTRY_CAP.get())
    converted = xmlsafe.checked(body, hdrs)  # ParseError if it declares entities
    fast = None if cut_warning else fastrss.read(body, hdrs, (converted.data, converted.result))
    if fast is not None:  # plain RSS 2.0: the same entries as feedparser, 10x cheaper
        feed, entries = fast
        complete, warnings = True, []
    else:
        feed, entries, complete, warnings = _feedparser(body, hdrs, cut_warning)
    if repaired:
        warnings = [repaired, *warnings]
    keys = unique_keys(
        item_key(_str(e.get("id")), _str(e.get("link")), _str(e.get("title"))) for e in entries
    )
    items = [_item(key, entry) for key, entry in zip(keys, entries, strict=True)]
    hubs, self_url = hublinks.xml_links(body, url)
    return Parsed(
        items=items,
        title=str(feed.get("title", "")),
        complete=complete,
        ttl_seconds=_ttl(feed.get("ttl")),
        skip_hours=skip_hours(body),
        warnings=warnings,
        hubs=hubs,
        self_url=self_url,
        skip_days=skip_days(body),
        update_period=update_period(body),
    )


def _feedparser(
    body: bytes, hdrs: dict[str, str], cut_warning: str | None
) -> tuple[Mapping[str, Any], list[Any], bool, list[str]]:
    """Feed values, entries, completeness and warnings through feedparser."""
    data = feedparser.parse(
        body, response_headers=hdrs, sanitize_html=False, resolve_relative_uris=False
    )
    if not data.get("version") and not data.entries:
        raise ParseError(_not_a_feed(body, hdrs, data))
    complete = not (data.get("bozo") and not isinstance(data.get("bozo_exception"), _HARMLESS_BOZO))
    if not complete and not data.entries:
        raise ParseError(
            "the feed is not well-formed XML and no entry could be read from it"
            f" ({_xml_error(data.get('bozo_exception'))})"
        )
    warnings = [] if complete else [f"feed is malformed: {data.get('bozo_exception')}"]
    if cut_warning:
        complete = False
        warnings = [cut_warning]
    return data.feed, data.entries, complete, warnings


def _xml_error(exc: Any) -> str:
    """A SAX error as "line L, column C: message" (feedparser's str says "<unknown>:L:C")."""
    if isinstance(exc, SAXParseException):
        return f"line {exc.getLineNumber()}, column {exc.getColumnNumber()}: {exc.getMessage()}"
    return str(exc)


def cut_entries(body: bytes, cap: int | None) -> tuple[bytes, str | None]:
    """Cut ``body`` before its ``cap + 1``-th ``<item>``/``<entry>`` start tag.

    Returns:
        The (possibly shortened) body and a warning when it was cut.
    """
    if cap is None:
        return body, None
    for count, match in enumerate(_ENTRY_START.finditer(body)):
        if count == cap:
            return body[: match.start()], f"more than {cap} entries: read the first {cap}"
    return body, None


def _item(key: str, entry: Any) -> Item:
    # dict.get: feedparser's own get() maps missing keys to others, with a warning
    content = "\n".join(_str(c.get("value", "")) for c in entry.get("content", []) or [])
    return Item(
        key=key,
        title=_str(entry.get("title", "")),
        link=_str(entry.get("link", "")),
        author=_str(entry.get("author", "")),
        summary=_str(entry.get("summary", "")),
        content=content,
        published=struct_to_db(dict.get(entry, "published_parsed")),
        updated=struct_to_db(dict.get(entry, "updated_parsed")),
    )


_HOUR = re.compile(rb"<hour>\s*(\d{1,2})\s*</hour>")


def skip_hours(body: bytes) -> frozenset[int]:
    """RSS ``<skipHours>``: the UTC hours (0-23) not to poll. feedparser keeps only one."""
    start = body.find(b"<skipHours>")  # one C-speed scan; most feeds have none
    end = body.find(b"</skipHours>", start) if start >= 0 else -1
    if end < 0:
        return frozenset()
    hours = (int(h) for h in _HOUR.findall(body, start, end))
    return frozenset(h for h in hours if 0 <= h <= 23)


_DAY = re.compile(rb"<day>\s*([A-Za-z]+)\s*</day>")
_WEEKDAYS = {
    name: i
    for i, name in enumerate(
        (b"monday", b"tuesday", b"wednesday", b"thursday", b"friday", b"saturday", b"sunday")
    )
}


def skip_days(body: bytes) -> frozenset[int]:
    """RSS ``<skipDays>``: the weekdays (0 = Monday, UTC) not to poll; unknown names ignored."""
    start = body.find(b"<skipDays>")
    end = body.find(b"</skipDays>", start) if start >= 0 else -1
    if end < 0:
        return frozenset()
    days = (_WEEKDAYS.get(d.lower()) for d in _DAY.findall(body, start, end))
    return frozenset(d for d in days if d is not None)


_PERIODS = {b"hourly": 3600, b"daily": 86400, b"weekly": 7 * 86400, b"monthly": 30 * 86400,
            b"yearly": 365 * 86400}  # fmt: skip
_SY_PERIOD = re.compile(rb"<(?:[\w.-]+:)?updatePeriod>\s*([A-Za-z]+)\s*</")
_SY_FREQUENCY = re.compile(rb"<(?:[\w.-]+:)?updateFrequency>\s*(\d{1,6})\s*</")


def update_period(body: bytes) -> float | None:
    """RSS Syndication ``updatePeriod`` / ``updateFrequency``: seconds between updates.

    ``hourly`` with frequency 2 is 1800 s. Unknown periods, and a frequency of 0,
    give None. The module's header (``<channel>``) is searched, not the items.
    """
    head = body[: body.find(b"<item")] if b"<item" in body else body[:65536]
    period = _SY_PERIOD.search(head)
    if period is None or (seconds := _PERIODS.get(period.group(1).lower())) is None:
        return None
    frequency = _SY_FREQUENCY.search(head)
    count = int(frequency.group(1)) if frequency else 1
    return seconds / count if count > 0 else None


def _ttl(value: Any) -> int | None:
    try:
        minutes = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return minutes * 60 if minutes > 0 else None


def _not_a_feed(body: bytes, headers: Mapping[str, str], data: Any) -> str:
    ctype = headers.get("content-type", "unknown")
    head = body.lstrip()[:200].lower()
    if b"<html" in head or b"<!doctype html" in head or "html" in ctype:
        return (
            f"expected a feed but got an HTML page (content-type {ctype}); for a live blog or"
            ' an article set kind = "liveblog" or kind = "page", or use the page\'s feed URL'
        )
    reason = data.get("bozo_exception")
    return f"not a feed (content-type {ctype}){f': {reason}' if reason else ''}"


def parse_json_feed(body: bytes, url: str = "") -> Parsed:
    """JSON Feed 1.0 / 1.1 (https://jsonfeed.org/version/1.1)."""
    try:
        doc = json.loads(decode_json(body))
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"response is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith(
        "https://jsonfeed.org/version/1"
    ):
        raise ParseError("JSON response is not a JSON Feed (no jsonfeed.org version)")
    raw_items = [i for i in doc.get("items") or [] if isinstance(i, dict)]
    keys = unique_keys(
        item_key(
            _str(i.get("id")), _str(i.get("url") or i.get("external_url")), _str(i.get("title"))
        )
        for i in raw_items
    )
    items = [_json_item(key, i) for key, i in zip(keys, raw_items, strict=True)]
    hubs, self_url = hublinks.json_links(doc, url)
    return Parsed(
        items=items,
        title=_str(doc.get("title")),
        hubs=hubs,
        self_url=self_url,
        expired=doc.get("expired") is True,
    )


def _json_item(key: str, raw: dict[str, Any]) -> Item:
    authors = raw.get("authors") or ([raw["author"]] if isinstance(raw.get("author"), dict) else [])
    names = ", ".join(_str(a.get("name")) for a in authors if isinstance(a, dict) and a.get("name"))
    return Item(
        key=key,
        title=_str(raw.get("title")),
        link=_str(raw.get("url") or raw.get("external_url")),
        author=names,
        summary=_str(raw.get("summary")),
        content=_str(raw.get("content_html") or raw.get("content_text")),
        published=iso_to_db(raw.get("date_published")),
        updated=iso_to_db(raw.get("date_modified")),
    )


def _str(value: Any) -> str:
    """``value`` as text without control characters (NUL would cut strings in C tools)."""
    return "" if value is None else _CONTROL.sub("", str(value))
