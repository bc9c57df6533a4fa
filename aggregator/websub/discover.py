"""Where a source can be pushed from: its hub and topic (WebSub section 4, Discovery).

HTTP ``Link`` headers come first; only when they name no hub is the document read
(``atom:link`` in RSS and Atom, ``hubs`` in JSON Feed, which the parser collects into
``Parsed.hubs``). The topic is the ``self`` URL, from the same place as the hub; a
response that names a hub but no ``self`` URL is its own topic (the URL fetched).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from aggregator.models import Parsed

_LINK = re.compile(r"\s*<([^>]*)>(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Discovery:
    """What one response says about push.

    Attributes:
        hub: the hub to subscribe at (``None``: the publisher offers none).
        topic: the URL to subscribe to (the ``self`` URL).
        where: ``Link header`` or ``document``, for logs and ``sources``.
    """

    hub: str | None
    topic: str | None
    where: str = ""


def link_header(value: str, base: str) -> list[tuple[str, frozenset[str]]]:
    """The (absolute URL, rel values) of each link in an HTTP ``Link`` header (RFC 8288)."""
    links = []
    for part in _split_links(value):
        match = _LINK.match(part)
        if match is None:
            continue
        rels: set[str] = set()
        for param in match.group(2).split(";"):
            name, _, given = param.partition("=")
            if name.strip().lower() == "rel":
                rels.update(given.strip().strip('"').lower().split())
        url = urljoin(base, match.group(1).strip())
        if urlsplit(url).scheme in ("http", "https"):
            links.append((url, frozenset(rels)))
    return links


def _split_links(value: str) -> list[str]:
    """``value`` cut at the commas between links (not those inside ``<...>`` or quotes)."""
    parts, start, angle, quoted = [], 0, False, False
    for i, char in enumerate(value):
        if char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        elif char == '"' and not angle:
            quoted = not quoted
        elif char == "," and not angle and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def discover(headers: Mapping[str, str], parsed: Parsed | None, url: str) -> Discovery | None:
    """The hub and topic of a response fetched from ``url`` (headers in lower case).

    Returns:
        ``None`` when the body was not read (``parsed`` is None: a 304, an identical
        body) and the headers name no hub: nothing is known then. Otherwise a
        ``Discovery``, whose ``hub`` is None when neither headers nor document name one.
    """
    links = link_header(headers.get("link", ""), url)
    hubs = [u for u, rels in links if "hub" in rels]
    if hubs:
        selves = [u for u, rels in links if "self" in rels]
        topic = selves[0] if selves else (parsed.self_url if parsed else None) or url
        return Discovery(hubs[0], topic, "Link header")
    if parsed is None:
        return None
    if parsed.hubs:
        return Discovery(parsed.hubs[0], parsed.self_url or url, "document")
    return Discovery(None, None, "")
