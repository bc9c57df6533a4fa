"""Find what to poll from a URL a user pasted, and read/write OPML subscription lists.

No network here: ``discover`` looks at one response body; the CLI fetches.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser

from aggregator.errors import ConfigError

FEED_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/json",
    "application/rdf+xml",
)


@dataclass(frozen=True, slots=True)
class Found:
    """A source discovered in a page: its URL, kind and a title if the page gave one."""

    url: str
    kind: str
    title: str = ""


def feed_links(html: bytes | str, base: str) -> list[Found]:
    """``<link rel="alternate">`` feeds of an HTML page, in page order, absolute URLs."""
    tree = LexborHTMLParser(html if isinstance(html, str) else html.decode("utf-8", "replace"))
    found = []
    for link in tree.css("link[rel][href]"):
        rels = (link.attributes.get("rel") or "").lower().split()
        kind = (link.attributes.get("type") or "").lower().split(";")[0].strip()
        if "alternate" in rels and kind in FEED_TYPES:
            href = urljoin(base, link.attributes.get("href") or "")
            found.append(Found(href, "feed", link.attributes.get("title") or ""))
    return found


def is_live_blog(html: bytes | str) -> str | None:
    """The headline of a JSON-LD ``LiveBlogPosting`` in the page ('' if untitled), else None."""
    tree = LexborHTMLParser(html if isinstance(html, str) else html.decode("utf-8", "replace"))
    for script in tree.css('script[type="application/ld+json"]'):
        try:
            data = json.loads(script.text(deep=True, strip=False))
        except ValueError:
            continue
        for node in _nodes(data):
            types = node.get("@type", [])
            if "LiveBlogPosting" in ([types] if isinstance(types, str) else types):
                return str(node.get("headline") or "")
    return None


def _nodes(data: Any) -> list[dict[str, Any]]:
    items = data if isinstance(data, list) else [data]
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict):
            graph = item.get("@graph")
            out += [n for n in graph if isinstance(n, dict)] if isinstance(graph, list) else [item]
    return out


@dataclass(frozen=True, slots=True)
class Outline:
    """One feed of an OPML file: URL, title and the folders it sits in."""

    url: str
    title: str = ""
    folders: list[str] = field(default_factory=list)


def read_opml(data: bytes, where: str) -> list[Outline]:
    """The feeds of an OPML document; folder outlines become ``folders``."""
    if b"<!ENTITY" in data:
        raise ConfigError(f"{where}: OPML with entity declarations is refused")
    try:
        root = ET.fromstring(data)  # noqa: S314 (entities refused above; expat loads no DTDs)
    except ET.ParseError as exc:
        raise ConfigError(f"{where}: not valid OPML (XML error: {exc})") from None
    body = root.find("body")
    if root.tag != "opml" or body is None:
        raise ConfigError(f"{where}: not an OPML file (no <opml><body>)")
    out: list[Outline] = []
    _walk(body, [], out)
    return out


def _walk(node: ET.Element, folders: list[str], out: list[Outline]) -> None:
    for child in node.findall("outline"):
        title = child.get("title") or child.get("text") or ""
        url = child.get("xmlUrl")
        if url:
            out.append(Outline(url.strip(), title, list(folders)))
        else:
            _walk(child, [*folders, title] if title else folders, out)


def write_opml(sources: list[dict[str, Any]], title: str = "aggregator sources") -> str:
    """An OPML 2.0 document; a source's first tag becomes its folder.

    Feeds are ``type="rss"`` outlines; live blogs and pages are ``type="link"``.
    """
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    body = ET.SubElement(root, "body")
    folders: dict[str, ET.Element] = {}
    for source in sources:
        parent = body
        if source.get("tags"):
            tag = source["tags"][0]
            if tag not in folders:
                folders[tag] = ET.SubElement(body, "outline", text=tag, title=tag)
            parent = folders[tag]
        if source.get("kind", "feed") == "feed":
            attrs = {"type": "rss", "xmlUrl": source["url"]}
        else:  # a live blog or page is no feed: OPML's plain link, so readers skip it
            attrs = {"type": "link", "url": source["url"]}
        ET.SubElement(parent, "outline", text=source["name"], title=source["name"], **attrs)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
