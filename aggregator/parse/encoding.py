"""Invalid UTF-8 costs one character, never the rest of the document.

feedparser decodes a whole document with one codec: when UTF-8 fails
anywhere it falls back to windows-1252 for *all* of it, so one bad byte in
one item turns every valid ``naïve café Ελληνικά`` title of the feed into
mojibake. ``repair_utf8`` replaces the invalid sequences of a UTF-8
document with U+FFFD before any parser sees it, and leaves every other
document as it came:

* declared UTF-8 (HTTP ``charset`` first, else the XML declaration, as
  feedparser ranks them): repaired, unless the body holds no valid UTF-8
  multibyte sequence at all (legacy bytes under a wrong label, which
  feedparser's fallback reads better);
* undeclared: repaired when its valid UTF-8 multibyte sequences outnumber its
  invalid ones (a cp1252 feed has almost none; a stray ``ß“`` pair is not
  enough);
* declared anything else, or UTF-16/UTF-32 (a BOM or NUL bytes in the first
  four): untouched.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping

_CHARSET = re.compile(r";\s*charset\s*=\s*[\"']?([^\"';\s]+)", re.IGNORECASE)
_XML_ENCODING = re.compile(
    rb"\A(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']{1,40})[\"']"
)
_VALID_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]"
    rb"|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_UNICODE_BOMS = (codecs.BOM_UTF32_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE)
_REPLACEMENT = "\ufffd"


def http_charset(headers: Mapping[str, str]) -> str:
    """The ``charset`` of the ``content-type`` header (lower-case names), or ""."""
    match = _CHARSET.search(headers.get("content-type", ""))
    return match.group(1).lower() if match else ""


def xml_charset(body: bytes) -> str:
    """The ``encoding`` of the XML declaration, or ""."""
    match = _XML_ENCODING.match(body)
    return match.group(1).decode("ascii", "replace").lower() if match else ""


def is_utf8(name: str) -> bool:
    """Whether ``name`` is a label of UTF-8 (``utf8``, ``UTF-8``, ``utf_8``...)."""
    try:
        return codecs.lookup(name).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def repair_utf8(body: bytes, headers: Mapping[str, str]) -> tuple[bytes, str | None]:
    """``body`` with its invalid UTF-8 sequences replaced when it is a UTF-8 document.

    Args:
        body: the response body.
        headers: the response headers (lower-case names).

    Returns:
        The body (the same object when nothing was replaced) and a warning
        saying how many sequences were replaced, or ``None``.
    """
    if body.isascii() or _is_valid_utf8(body) or _is_wide(body):
        return body, None
    declared = http_charset(headers) or xml_charset(body)
    if declared and not is_utf8(declared):
        return body, None
    text = body.decode("utf-8", errors="replace")
    invalid = text.count(_REPLACEMENT) - body.count(_REPLACEMENT.encode())
    valid = len(_VALID_MULTIBYTE.findall(body))
    needed = 1 if declared else invalid + 1  # evidence that this is a UTF-8 document
    if valid < needed:
        return body, None
    return text.encode("utf-8"), _warning(invalid)


def decode_json(body: bytes) -> str:
    """A JSON body as text: UTF-16/32 by its first bytes, else UTF-8 with invalid bytes replaced."""
    return body.decode(json.detect_encoding(body), errors="replace")


def _is_valid_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_wide(body: bytes) -> bool:
    """UTF-16 or UTF-32 by a BOM or by NUL bytes around the first ``<``."""
    return body.startswith(_UNICODE_BOMS) or b"\x00" in body[:4]


def _warning(invalid: int) -> str:
    plural = "sequence was" if invalid == 1 else "sequences were"
    return f"{invalid} invalid UTF-8 byte {plural} replaced with U+FFFD"
