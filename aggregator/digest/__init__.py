"""Digests of what changed: build once (``build_digest``), render in any format.

Rendering is pure: every renderer takes a ``Digest`` and returns a string.
"""

from __future__ import annotations

from aggregator.digest.feeds import render_atom, render_json
from aggregator.digest.model import Digest, build_digest
from aggregator.digest.page import render_page
from aggregator.digest.text import render_markdown, render_text

__all__ = ["FORMATS", "Digest", "build_digest", "render"]

FORMATS = ("text", "markdown", "html", "json", "atom")


def render(digest: Digest, fmt: str, *, color: bool = False) -> str:
    """Render ``digest`` as ``fmt`` (one of ``FORMATS``); ``color`` applies to text only."""
    if fmt == "text":
        return render_text(digest, color=color)
    renderers = {
        "markdown": render_markdown,
        "html": render_page,
        "json": render_json,
        "atom": render_atom,
    }
    try:
        return renderers[fmt](digest)
    except KeyError:
        raise ValueError(
            f"unknown digest format {fmt!r} (use one of {', '.join(FORMATS)})"
        ) from None
