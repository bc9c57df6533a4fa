"""Refuse XML documents that declare entities, before any XML parser sees them.

An entity declared in a DOCTYPE's internal subset is expanded wherever it is
referenced: ten nested entities ("billion laughs") make gigabytes of text,
and one 100 KB entity referenced 100,000 times makes 10 GB. feedparser
copies plain-text entity declarations into its loose parser's table and
expands them there without any limit; an external entity (``SYSTEM
"file:///..."``) asks the parser to read a file or a URL. News feeds have no
use for either, so a document declaring an entity is refused with a
``ParseError``, the policy of defusedxml's ``EntitiesForbidden``, with one
exception: old feeds declare named characters such as ``<!ENTITY nbsp
"&#160;">``, and an entity whose whole value is one character (or one
character reference) cannot amplify anything, so those are allowed. A DOCTYPE
without an internal subset (RSS 0.91's Netscape DTD) is fine: no parser
here loads an external DTD.

The check reads the document as feedparser will: ``convert_to_utf8`` picks
the same encoding (BOM, UTF-16/UTF-32, EBCDIC, HTTP ``charset``, XML
declaration) and gives the UTF-8 text every parser path then reads (the
fast lxml reader takes it as is), so an entity spelled in UTF-16 or behind a
BOM is found too. The prolog searched ends at the root element, and no
sooner than where feedparser's own DOCTYPE rewriting (``replace_doctype``)
stops looking; comments inside it are searched too, since that rewriting
does not skip them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feedparser.encodings import convert_to_utf8

from aggregator.errors import ParseError

#: Comments, processing instructions and quoted literals (skipped whole, so a
#: ``<`` inside them does not end the prolog), or the root element's ``<``.
_PROLOG_TOKEN = re.compile(
    rb"<!--.*?(?:-->|\Z)|<\?.*?(?:\?>|\Z)|\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z)|(<[^!?])", re.DOTALL
)
_FEEDPARSER_HEAD_END = re.compile(rb"<\w")  # feedparser.sanitizer.replace_doctype's split
_ENTITY_DECL = re.compile(rb"<!ENTITY\s*(%?)\s*([\w.:-]{0,40})", re.IGNORECASE)
#: A whole declaration of a named character: one character or one character reference.
_CHARACTER_DECL = re.compile(
    rb"""<!ENTITY\s+[\w.:-]{1,40}\s+(["'])(?:&\#[0-9]{1,7};|&\#x[0-9a-fA-F]{1,6};|[^&%"'<\x80-\xff]|[\xc0-\xf7][\x80-\xbf]{1,3})\1\s*>"""
)


@dataclass(frozen=True, slots=True)
class Converted:
    """A document as feedparser reads it: UTF-8 bytes and its ``convert_to_utf8`` verdict."""

    data: bytes
    result: Mapping[str, Any]


def checked(body: bytes, headers: Mapping[str, str]) -> Converted:
    """``body`` converted to UTF-8 as feedparser would, after refusing entity declarations.

    Args:
        body: the response body.
        headers: lower-case response headers, as given to ``feedparser.parse``.

    Raises:
        ParseError: the document declares an XML entity.
    """
    result: dict[str, Any] = {}
    data = convert_to_utf8(dict(headers), body, result)
    refuse_entities(data)
    return Converted(data, result)


def refuse_entities(data: bytes) -> None:
    """``ParseError`` if the prolog of the UTF-8 ``data`` declares an entity.

    A declaration of a single character (``<!ENTITY nbsp "&#160;">``) is allowed.
    """
    end = prolog_end(data)
    match = next(
        (
            m
            for m in _ENTITY_DECL.finditer(data, 0, end)
            if not _CHARACTER_DECL.match(data, m.start())
        ),
        None,
    )
    if match is None:
        return
    percent = "% " if match.group(1) else ""
    name = match.group(2).decode("ascii", "replace") or "..."
    raise ParseError(
        "refused: the document declares XML entities in its DTD"
        f" (<!ENTITY {percent}{name} ...>); entity expansion is disabled for safety"
    )


def prolog_end(data: bytes) -> int:
    """Where the prolog ends: the root element, or feedparser's head end if that is later."""
    end = len(data)
    for match in _PROLOG_TOKEN.finditer(data):
        if match.group(1) is not None:
            end = match.start()
            break
    head = _FEEDPARSER_HEAD_END.search(data)
    return max(end, head.end() if head else 0)
