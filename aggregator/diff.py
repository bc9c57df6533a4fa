"""Word-level diffs between two texts, shared by notifications and digests.

Tokens keep their trailing whitespace (``\\w+\\s*``), and ``autojunk`` is off:
bare whitespace tokens or autojunk make ``SequenceMatcher`` mark whole
articles as changed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher

_TOKEN = re.compile(r"\w+\s*|[^\w\s]+\s*|\s+")


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of the diff: ``op`` is ``equal``, ``insert`` or ``delete``."""

    op: str
    text: str


def tokens(text: str) -> list[str]:
    """Split ``text`` into words with their trailing whitespace attached."""
    return _TOKEN.findall(text)


def word_diff(old: str, new: str) -> list[Segment]:
    """The word diff from ``old`` to ``new`` as equal/delete/insert segments.

    Joining the ``equal`` and ``insert`` segments gives ``new`` exactly;
    joining ``equal`` and ``delete`` gives ``old``.
    """
    a, b = tokens(old), tokens(new)
    out: list[Segment] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(Segment("equal", "".join(a[i1:i2])))
            continue
        if op in ("delete", "replace"):
            out.append(Segment("delete", "".join(a[i1:i2])))
        if op in ("insert", "replace"):
            out.append(Segment("insert", "".join(b[j1:j2])))
    return out


def render_markers(segments: list[Segment]) -> str:
    """Plain-text rendering: ``[-deleted-]{+inserted+}``."""
    return "".join(_marked(segments, "[-{}-]", "{{+{}+}}"))


def render_ansi(segments: list[Segment]) -> str:
    """Terminal rendering: deletions red and struck, insertions green and underlined."""
    return "".join(_marked(segments, "\x1b[31;9m{}\x1b[0m", "\x1b[32;4m{}\x1b[0m"))


def _marked(segments: list[Segment], deleted: str, inserted: str) -> Iterator[str]:
    for seg in segments:
        if seg.op == "equal":
            yield seg.text
            continue
        body = seg.text.rstrip()
        tail = seg.text[len(body) :]
        yield (deleted if seg.op == "delete" else inserted).format(body) + tail


def render_html(segments: list[Segment]) -> str:
    """HTML rendering: ``<del>``/``<ins>`` around changes, every piece of text escaped."""
    out = []
    for seg in segments:
        text = html.escape(seg.text, quote=False)
        if seg.op == "equal":
            out.append(text)
        else:
            tag = "del" if seg.op == "delete" else "ins"
            out.append(f"<{tag}>{text}</{tag}>")
    return "".join(out)


def condense(segments: list[Segment], *, context: int = 6) -> list[Segment]:
    """Keep changed runs with ``context`` words either side; elide the rest with ``…``."""
    out: list[Segment] = []
    for index, seg in enumerate(segments):
        words = tokens(seg.text)
        if seg.op != "equal" or len(words) <= 2 * context:
            out.append(seg)
            continue
        head = "".join(words[:context]) if index > 0 else ""
        tail = "".join(words[-context:]) if index < len(segments) - 1 else ""
        if head or tail:
            out.append(Segment("equal", f"{head}… {tail}"))
    return out


def appended_text(old: str, new: str) -> str | None:
    """The text added at the end when ``new`` only extends ``old``; else ``None``."""
    if not new.startswith(old.rstrip()) or len(new.strip()) <= len(old.strip()):
        return None
    return new[len(old.rstrip()) :].strip()


def short_diff(old: str, new: str, *, context: int = 6, limit: int = 600) -> str:
    """A compact marker diff: only changed runs with a few words of context.

    Long equal runs are elided with ``…``; the result is cut at ``limit`` characters.
    """
    if old == new:
        return ""
    if not old:
        return _cut("{+" + new + "+}", limit)
    return _cut(render_markers(condense(word_diff(old, new), context=context)).strip(), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
