"""HTML helpers shared by the ``liveblog`` and ``page`` parsers.

Pages are parsed with selectolax's Lexbor backend. JSON-LD is read by hand:
every ``<script type="application/ld+json">`` block is decoded on its own, so
one invalid block is skipped (with a warning) and the others are still used;
lists and ``@graph`` containers are flattened into one list of nodes.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from aggregator.errors import ParseError

_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_LINES = re.compile(r"\s*\n\s*")


def load_html(body: bytes, headers: Mapping[str, str], *, kind: str) -> LexborHTMLParser:
    """Decode and parse an HTML page; ``ParseError`` if the body is not one.

    Args:
        body: the response body.
        headers: the response headers (lower-case names).
        kind: the source kind, named in the error message.
    """
    head = body.lstrip()[:300].lower()
    if not head:
        raise ParseError(f"empty response body: expected an HTML page for kind {kind!r}")
    if head.startswith((b"<?xml", b"<rss", b"<feed", b"{", b"[")) and b"<html" not in head:
        raise ParseError(
            f"expected an HTML page for kind {kind!r} but got a feed or data document"
            f" (content-type {headers.get('content-type', 'unknown')}); for a feed set"
            ' kind = "feed"'
        )
    return LexborHTMLParser(decode(body, headers))


def decode(body: bytes, headers: Mapping[str, str]) -> str:
    """The body as text: the header's charset, else a ``<meta>`` charset, else UTF-8."""
    for source in (headers.get("content-type", ""), body[:2048].decode("ascii", "replace")):
        if match := _CHARSET.search(source):
            try:
                return body.decode(match.group(1), errors="replace")
            except LookupError:
                continue
    return body.decode("utf-8", errors="replace")


def check_selector(selector: str) -> str:
    """Validate a CSS selector (for config models); ``ValueError`` if Lexbor rejects it."""
    if not selector.strip():
        raise ValueError("empty CSS selector")
    try:
        LexborHTMLParser("<p></p>").css(selector)
    except SelectolaxError:
        raise ValueError(f"invalid CSS selector {selector!r}") from None
    return selector


def json_ld(tree: LexborHTMLParser) -> tuple[list[dict[str, Any]], list[str]]:
    """Every JSON-LD node on the page, flattened, plus a warning per invalid block."""
    nodes: list[dict[str, Any]] = []
    warnings: list[str] = []
    for number, script in enumerate(tree.css('script[type="application/ld+json"]'), 1):
        text = script.text(deep=True, strip=False).strip()
        if not text:
            continue
        try:
            data = json.loads(text, strict=False)  # strict=False: raw newlines in strings
        except RecursionError:  # the C decoder stops at the interpreter's recursion limit
            warnings.append(f"JSON-LD block {number} is nested too deeply to read, skipped")
            continue
        except ValueError as exc:
            warnings.append(f"JSON-LD block {number} is not valid JSON, skipped: {exc}{_cut(exc)}")
            continue
        nodes.extend(_flatten(data))
    return nodes, warnings


def _cut(exc: ValueError) -> str:
    """A hint when a JSON-LD block ends inside a string: a ``</script>`` cut it short."""
    if isinstance(exc, json.JSONDecodeError) and exc.msg.startswith("Unterminated string"):
        return (
            '; it ends inside a string, as when a "</script>" inside a JSON-LD string ends'
            ' the script element early (the publisher must write it as "<\\/script>")'
        )
    return ""


def _flatten(data: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > 20:
        return
    if isinstance(data, list):
        for value in data:
            yield from _flatten(value, depth + 1)
    elif isinstance(data, dict):
        graph = data.get("@graph")
        if graph is not None:
            yield from _flatten(graph, depth + 1)
        if "@type" in data:
            yield data


def has_type(node: Mapping[str, Any], *names: str) -> bool:
    """Whether a JSON-LD node's ``@type`` (a string or a list) is one of ``names``."""
    value = node.get("@type")
    types = {value} if isinstance(value, str) else set(value) if isinstance(value, list) else set()
    return any(str(t).rsplit("/", 1)[-1] in names for t in types)


def as_list(value: Any) -> list[Any]:
    """``value`` as a list (JSON-LD allows one object where a list is expected)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def text_of(value: Any) -> str:
    """A JSON-LD scalar as text (``None`` and containers give "")."""
    return str(value).strip() if isinstance(value, str | int | float) else ""


def author_names(value: Any) -> str:
    """Author names from a JSON-LD ``author`` (a string, an object or a list of them)."""
    names = []
    for author in as_list(value):
        name = text_of(author.get("name")) if isinstance(author, dict) else text_of(author)
        if name and name not in names:
            names.append(name)
    return ", ".join(names)


def meta(tree: LexborHTMLParser, *names: str) -> str:
    """The first non-empty ``<meta property|name=... content=...>`` among ``names``."""
    for name in names:
        for attr in ("property", "name"):
            node = tree.css_first(f'meta[{attr}="{name}"]')
            if node is not None and (content := (node.attributes.get("content") or "").strip()):
                return content
    return ""


def canonical_link(tree: LexborHTMLParser, url: str) -> str:
    """The page's ``<link rel="canonical">`` made absolute, else ``url``."""
    node = tree.css_first('link[rel="canonical"]')
    href = (node.attributes.get("href") or "").strip() if node is not None else ""
    return urljoin(url, href) if href else url


def page_title(tree: LexborHTMLParser) -> str:
    """``og:title``, else the ``<title>`` element's text."""
    if title := meta(tree, "og:title", "twitter:title"):
        return title
    node = tree.css_first("title")
    return node.text(strip=True) if node is not None else ""


def node_text(node: LexborNode | None) -> str:
    """The visible text of ``node`` with single spaces ("" for ``None``)."""
    return " ".join(node.text(separator=" ").split()) if node is not None else ""


def text_to_html(text: str) -> str:
    """Plain text (one paragraph per line) as ``<p>`` paragraphs, entities decoded once."""
    if "<" in text and re.search(r"</?[a-zA-Z][^>]*>", text):
        return text  # already markup
    lines = [line for line in _LINES.split(html.unescape(text)) if line.strip()]
    return "".join(f"<p>{html.escape(line, quote=False)}</p>" for line in lines)
