"""Make publisher HTML and links safe to render: the one sanitiser of every HTML output.

The store keeps exactly what the publisher sent (``versions.summary`` and
``versions.content`` hold the original markup), so every output that renders
HTML (the HTML digest, its Atom feed, ``aggregator serve``'s pages) passes it
through ``clean_html`` first, and every link through ``safe_link``.
feedparser's own sanitiser is off: it lets ``<svg><a xlink:href="javascript:...">``
through; nh3 (Ammonia) does not. Pure functions, no I/O.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import nh3

#: URL schemes a rendered link may use: only web links (no ``javascript:``, ``data:``,
#: ``mailto:``).
SAFE_SCHEMES = frozenset({"http", "https"})

#: Formatting kept from feed HTML; everything else (scripts, styles, images, forms,
#: SVG, iframes, event handlers) is dropped, its text kept where it is text.
ALLOWED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "p", "br", "ul", "ol", "li", "blockquote", "q", "cite"}
    | {"code", "pre", "sub", "sup", "s", "del", "ins", "h3", "h4", "h5", "h6"}
)


def clean_html(markup: str) -> str:
    """``markup`` cut down to harmless formatting and http(s) links.

    Scripts and styles are dropped with their content; event handlers,
    ``javascript:`` URLs, SVG and forms are removed; links get
    ``rel="noopener noreferrer"``.
    """
    if not markup:
        return ""
    return nh3.clean(
        markup,
        tags=set(ALLOWED_TAGS),
        attributes={"a": {"href", "title"}},
        url_schemes=set(SAFE_SCHEMES),
        clean_content_tags={"script", "style"},
        link_rel="noopener noreferrer",
    )


def safe_link(url: str | None) -> str:
    """``url`` (stripped) if it is an http(s) URL with a host, else ``""``."""
    url = (url or "").strip()
    if any(c in url for c in "\r\n\t\0"):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return url if parts.scheme.lower() in SAFE_SCHEMES and parts.netloc else ""
