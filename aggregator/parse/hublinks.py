"""The WebSub hubs and ``self`` URL a feed document names (W3C WebSub, section 4).

RSS and Atom name them with ``<link rel="hub" href="..."/>`` (``atom:link`` in RSS)
among the feed's own elements; JSON Feed with ``hubs`` and ``feed_url``. Only the
head of an XML document is read (up to its first ``<item>`` or ``<entry>``), with one
C-speed scan, as ``skip_hours`` does: an entry's links are the entry's, not the feed's.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

_ENTRY = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s/>]")
_LINK = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?link\b([^>]*)>")
_ATTR = re.compile(rb"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
#: The most hubs kept from one document (a hostile one may list thousands).
MAX_HUBS = 5


def xml_links(body: bytes, base: str) -> tuple[tuple[str, ...], str | None]:
    """The hubs and ``self`` URL in an RSS or Atom document's head, made absolute."""
    end = _ENTRY.search(body)
    head = body[: end.start()] if end else body
    hubs: list[str] = []
    self_url: str | None = None
    for match in _LINK.finditer(head):
        attrs = {
            name.lower().rsplit(b":", 1)[-1]: double or single
            for name, double, single in _ATTR.findall(match.group(1))
        }
        href = attrs.get(b"href")
        rels = (attrs.get(b"rel") or b"").lower().split()
        if not href:
            continue
        url = _absolute(base, html.unescape(href.decode("utf-8", "replace")))
        if url is None:
            continue
        if b"hub" in rels and url not in hubs and len(hubs) < MAX_HUBS:
            hubs.append(url)
        if b"self" in rels and self_url is None:
            self_url = url
    return tuple(hubs), self_url


def json_links(doc: dict[str, Any], base: str) -> tuple[tuple[str, ...], str | None]:
    """The hubs (``hubs`` of type WebSub) and ``feed_url`` of a JSON Feed document."""
    hubs: list[str] = []
    for hub in doc.get("hubs") or []:
        if not isinstance(hub, dict) or not isinstance(hub.get("url"), str):
            continue
        if str(hub.get("type", "WebSub")).lower() not in ("websub", "pubsubhubbub"):
            continue
        url = _absolute(base, hub["url"])
        if url is not None and url not in hubs and len(hubs) < MAX_HUBS:
            hubs.append(url)
    feed_url = doc.get("feed_url")
    self_url = _absolute(base, feed_url) if isinstance(feed_url, str) else None
    return tuple(hubs), self_url


def _absolute(base: str, href: str) -> str | None:
    """``href`` resolved against ``base``, if it is an http(s) URL then."""
    url = urljoin(base, href.strip())
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.hostname else None
