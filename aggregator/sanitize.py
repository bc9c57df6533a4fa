"""Make publisher HTML and links safe to render. Pure functions, no I/O.

The store keeps exactly what the publisher sent (``versions.summary`` and
``versions.content`` hold the original markup), so every output that renders
HTML (digests, notifications, Atom) passes it through ``clean_html`` first,
and every link through ``safe_link``. feedparser's own sanitiser is off: it
lets ``<svg><a xlink:href="javascript:...">`` through; nh3 (Ammonia) does not.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import nh3

#: URL schemes a rendered link or image may use.
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})


def clean_html(markup: str) -> str:
    """``markup`` with scripts, event handlers, ``javascript:`` URLs, SVG and forms removed."""
    if not markup:
        return ""
    return nh3.clean(markup, url_schemes=set(SAFE_SCHEMES), link_rel="noopener noreferrer")


def safe_link(url: str) -> str:
    """``url`` if it is an http(s)/mailto URL, else ``""`` (never a ``javascript:`` link)."""
    url = url.strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return ""
    return url if scheme in SAFE_SCHEMES else ""
