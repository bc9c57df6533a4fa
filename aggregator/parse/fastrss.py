"""A fast reader for plain, well-formed RSS 2.0: the same entries feedparser gives.

feedparser is pure Python and costs ~5 ms for a 35 KB feed even without its
sanitiser; most feeds are simple RSS 2.0 that lxml reads in a tenth of that.
``read`` accepts only a narrow, common shape and returns ``None`` for anything
else, so the caller falls back to feedparser:

* a UTF-8 document (by feedparser's own ``convert_to_utf8`` decision), no
  DOCTYPE or entity declarations (``feed.py`` refuses any document declaring
  entities before this runs, ``xmlsafe``), well-formed for libxml2 (no DTD
  loaded, no entity resolved, no network);
* ``<rss>`` > one ``<channel>`` > plain elements; no namespaced element, no
  attribute anywhere except ``rss/@version`` and ``guid/@isPermaLink``;
* items whose children are ``title``, ``link``, ``guid``, ``pubDate``,
  ``description``, ``category``, each at most once (``category`` repeatable),
  holding text only (no child elements or comments).

Within that shape each value is computed as feedparser's strict parser does
(``_FeedParserMixin.pop``): stripped, relative links resolved against the
base URI, the UTF-8-read-as-Latin-1 repair, the cp1252 mapping, the
``&amp;`` repair of links, a permalink guid standing in for a missing link,
and dates through feedparser's own date parser. ``tests/test_fastrss.py``
checks the result equals feedparser's for every feed the tests and the
benchmark serve.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from feedparser.datetimes import _parse_date
from feedparser.encodings import convert_to_utf8
from feedparser.html import _cp1252
from feedparser.urls import _urljoin, make_safe_absolute_uri
from lxml import etree

_PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
    "strip_cdata": True,
    "recover": False,
}
_ITEM_FIELDS = frozenset({"title", "link", "guid", "pubDate", "description", "category"})
_REPEATABLE = frozenset({"category"})
_CHANNEL_FIELDS = frozenset(
    {
        "title", "link", "description", "language", "ttl", "lastBuildDate", "pubDate",
        "generator", "copyright", "docs", "managingEditor", "webMaster", "category",
    }
)  # fmt: skip
_LINK_ENTITY = re.compile("&([A-Za-z0-9_]+);")


class _Unusual(Exception):
    """The document is outside the shape this reader handles."""


Entries = list[dict[str, Any]]


def read(
    body: bytes,
    headers: Mapping[str, str],
    converted: tuple[bytes, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], Entries] | None:
    """Feed-level values and entries as feedparser would give them, or ``None``.

    Args:
        body: the response body.
        headers: lower-case response headers, with ``content-location`` set to
            the final URL (as for ``feedparser.parse``).
        converted: ``convert_to_utf8``'s data and result for ``body`` and
            ``headers``, when the caller already has them (saves a decoding).

    Returns:
        ``(feed, entries)`` (plain dicts with feedparser's keys), or ``None``
        when the document needs feedparser.
    """
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body or b"<rss" not in body[:4096]:
        return None
    data, result = converted or _convert(body, headers)
    if result.get("bozo") or result.get("encoding") != "utf-8":
        return None
    try:
        root = etree.fromstring(data, etree.XMLParser(**_PARSER_OPTIONS))
        return _read_rss(root, _base_uri(headers.get("content-location", "")))
    except (etree.XMLSyntaxError, _Unusual, ValueError):
        return None


def _convert(body: bytes, headers: Mapping[str, str]) -> tuple[bytes, dict[str, Any]]:
    result: dict[str, Any] = {}
    return convert_to_utf8(dict(headers), body, result), result


def _base_uri(location: str) -> str:
    """feedparser's base URI at the depth of an item's children (depth 4)."""
    base = make_safe_absolute_uri("", location) or make_safe_absolute_uri(location) or ""
    for _depth in range(4):  # unknown_starttag re-derives it at every element
        base = (make_safe_absolute_uri(base, base) or base) if base else _urljoin(base, base)
    return base


def _read_rss(root: Any, base: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if root.tag != "rss" or set(root.attrib) - {"version"} or len(root) != 1:
        raise _Unusual
    channel = root[0]
    if channel.tag != "channel" or channel.attrib:
        raise _Unusual
    feed: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for child in channel:
        tag = child.tag
        if tag == "item":
            entries.append(_read_item(child, base))
        elif tag in _CHANNEL_FIELDS and tag not in feed and not child.attrib and not len(child):
            feed[tag] = _text(child)
        else:
            raise _Unusual
    return {k: v for k, v in feed.items() if k in ("title", "ttl")}, entries


def _read_item(item: Any, base: str) -> dict[str, Any]:
    if item.attrib:
        raise _Unusual
    entry: dict[str, Any] = {}
    seen: set[str] = set()
    for child in item:
        tag = child.tag
        if tag not in _ITEM_FIELDS or len(child) or (tag in seen and tag not in _REPEATABLE):
            raise _Unusual  # also comments and processing instructions (tag is not a str)
        seen.add(tag)
        attrib = child.attrib
        if attrib and (tag != "guid" or set(attrib) != {"isPermaLink"}):
            raise _Unusual
        text = child.text or ""
        if tag == "title":
            entry["title"] = _finish(text.strip())
        elif tag == "description":
            entry["summary"] = _finish(text.strip())
        elif tag == "pubDate":
            entry["published"] = value = _finish(text.strip())
            entry["published_parsed"] = _parse_date(value)
        elif tag == "link":
            entry["link"] = _link(_finish(_resolve(text.strip(), base)))
        elif tag == "guid":
            _guid(entry, text.strip(), attrib.get("isPermaLink", "true") == "true", base)
    return entry


def _guid(entry: dict[str, Any], text: str, is_link: bool, base: str) -> None:
    value = _finish(_resolve(text, base) if is_link else text)
    entry["id"] = value
    if is_link:
        entry.setdefault("link", value)  # _end_guid: _save('link', value)


def _text(element: Any) -> str:
    return _finish((element.text or "").strip())


def _resolve(text: str, base: str) -> str:
    return _urljoin(base, text) if text else text


def _finish(text: str) -> str:
    """The tail of feedparser's ``pop``: the Latin-1/UTF-8 repair, then cp1252."""
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return text.translate(_cp1252)


def _link(text: str) -> str:
    """feedparser's repair of ``&amp;`` in entry links."""
    return _LINK_ENTITY.sub(r"&\g<1>", text.replace("&amp;", "&"))
