"""Word-level diffs between two texts, shared by notifications and digests.

Tokens keep their trailing whitespace (``\\w+\\s*``) but are compared without
it, so a word followed by added text (``morning`` → ``morning and…``) stays
unchanged; ``autojunk`` is off: bare whitespace tokens or autojunk make
``SequenceMatcher`` mark whole articles as changed. A number with inner
separators (``1.9.3``, ``1,234``, ``12:30``, ``2024-05-06``) is one token, so a
diff never splits it; of equally long matches the one nearest the diagonal is
taken, so ``1.9.3 now.`` → ``1.9.4 now; 1.9.3 was…`` reads as the version
replaced and a clause added. Chinese and Japanese, written without spaces
between words, are compared character by character (a whole sentence would
otherwise be one "word").
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import Match, SequenceMatcher

#: Han ideographs, kana and CJK punctuation: scripts without spaces between words.
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}]\s*|[^\W{_CJK}]+(?:[.,:/-]\d+)*\s*|[^\w\s{_CJK}]+\s*|\s+")


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
    joining ``equal`` and ``delete`` gives ``old``. Words are matched without
    their trailing whitespace; where only that whitespace differs, the word is
    ``equal`` and the whitespace is the change.

    The last few results are kept: one stored change asks for the same diff up
    to four times (is it an append? its event's diff, its words changed).
    """
    return list(_word_diff(old, new))


@functools.lru_cache(maxsize=32)
def _word_diff(old: str, new: str) -> tuple[Segment, ...]:
    a, b = tokens(old), tokens(new)
    keys_a, keys_b = [t.rstrip() for t in a], [t.rstrip() for t in b]
    # The words both texts start and end with are matched directly: SequenceMatcher's
    # cost grows with the square of what it is given, so an edit in a long article is
    # only matched over the stretch between the common head and tail.
    head = _common_run(keys_a, keys_b)
    tail = _common_run(keys_a[head:][::-1], keys_b[head:][::-1])
    end_a, end_b = len(a) - tail, len(b) - tail
    out = _equal_run(a[:head], b[:head])
    matcher = _Matcher(None, keys_a[head:end_a], keys_b[head:end_b], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        i1, i2, j1, j2 = i1 + head, i2 + head, j1 + head, j2 + head
        if op == "equal":
            out += _equal_run(a[i1:i2], b[j1:j2])
            continue
        if op in ("delete", "replace"):
            out.append(Segment("delete", "".join(a[i1:i2])))
        if op in ("insert", "replace"):
            out.append(Segment("insert", "".join(b[j1:j2])))
    out += _equal_run(a[end_a:], b[end_b:])
    return tuple(_merged(out))


class _Matcher(SequenceMatcher):  # type: ignore[type-arg]
    """``SequenceMatcher`` that, of equally long matches, takes the one nearest the diagonal.

    difflib takes the earliest in the old text, so a word that recurs later in the new
    text (``1.9.3 now.`` → ``1.9.4 now; 1.9.3 was…``) is matched there and everything
    before it reads as inserted. Used without junk (``autojunk=False``, no ``isjunk``),
    so this is difflib's own loop with the tie broken by distance from the diagonal.
    """

    def find_longest_match(
        self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
    ) -> Match:
        a, b2j = self.a, self.b2j
        ahi = len(a) if ahi is None else ahi
        bhi = len(self.b) if bhi is None else bhi
        besti, bestj, bestsize, bestskew = alo, blo, 0, 0
        j2len: dict[int, int] = {}
        for i in range(alo, ahi):
            newj2len: dict[int, int] = {}
            for j in b2j.get(a[i], ()):
                if j < blo:
                    continue
                if j >= bhi:
                    break
                k = newj2len[j] = j2len.get(j - 1, 0) + 1
                skew = abs((i - alo) - (j - blo))
                if k > bestsize or (k == bestsize and skew < bestskew):
                    besti, bestj, bestsize, bestskew = i - k + 1, j - k + 1, k, skew
            j2len = newj2len
        return Match(besti, bestj, bestsize)


def _common_run(a: list[str], b: list[str]) -> int:
    """How many items ``a`` and ``b`` share at their start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _equal_run(old: list[str], new: list[str]) -> list[Segment]:
    """Tokens with the same words: one equal segment where the whitespace agrees too."""
    if old == new:
        return [Segment("equal", "".join(old))] if old else []
    out: list[Segment] = []
    for old_token, new_token in zip(old, new, strict=True):
        out += _equal_word(old_token, new_token)
    return out


def _equal_word(old: str, new: str) -> list[Segment]:
    """Two tokens with the same word: the word (and common whitespace) equal, the rest changed."""
    common = len(old.rstrip())
    while common < min(len(old), len(new)) and old[common] == new[common]:
        common += 1
    out = [Segment("equal", old[:common])]
    if old[common:]:
        out.append(Segment("delete", old[common:]))
    if new[common:]:
        out.append(Segment("insert", new[common:]))
    return out


def _merged(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring runs: each stretch between equal runs is one delete, then one insert."""
    out: list[Segment] = []
    pending = {"delete": "", "insert": ""}

    def flush() -> None:
        out.extend(Segment(op, text) for op, text in pending.items() if text)
        pending.update(delete="", insert="")

    for seg in segments:
        if not seg.text:
            continue
        if seg.op != "equal":
            pending[seg.op] += seg.text
            continue
        flush()
        if out and out[-1].op == "equal":
            out[-1] = Segment("equal", out[-1].text + seg.text)
        else:
            out.append(seg)
    flush()
    return out


def render_markers(segments: list[Segment]) -> str:
    """Plain-text rendering: ``[-deleted-]{+inserted+}``."""
    marks = {"delete": "[-{}-]", "insert": "{{+{}+}}"}
    return render_segments(segments, lambda op, body: marks[op].format(body))


def render_ansi(segments: list[Segment]) -> str:
    """Terminal rendering: deletions red and struck, insertions green and underlined."""
    marks = {"delete": "\x1b[31;9m{}\x1b[0m", "insert": "\x1b[32;4m{}\x1b[0m"}
    return render_segments(segments, lambda op, body: marks[op].format(body))


def render_html(segments: list[Segment]) -> str:
    """HTML rendering: ``<del>``/``<ins>`` around changes, every piece of text escaped."""

    def escape(text: str) -> str:
        return html.escape(text, quote=False)

    def mark(op: str, body: str) -> str:
        tag = "del" if op == "delete" else "ins"
        return f"<{tag}>{escape(body)}</{tag}>"

    return render_segments(segments, mark, escape)


def render_segments(
    segments: list[Segment],
    mark: Callable[[str, str], str],
    plain: Callable[[str], str] = str,
) -> str:
    """Render a diff with ``mark(op, words)`` around changes and ``plain(text)`` elsewhere.

    Whitespace around a change stays outside its mark; a change of whitespace
    only shows the new spacing unmarked; a deletion followed by an insertion
    reads ``[-old-]{+new+}``, with the new spacing after it.
    """
    out: list[str] = []
    index = 0
    while index < len(segments):
        seg = segments[index]
        index += 1
        if seg.op == "equal" or not seg.text.strip():
            out.append("" if seg.op == "delete" else plain(seg.text))
            continue
        lead, body, tail = _split_space(seg.text)
        following = segments[index] if index < len(segments) else None
        if seg.op == "delete" and following and following.op == "insert" and following.text.strip():
            _, new_body, tail = _split_space(following.text)
            body_marked = mark("delete", body) + mark("insert", new_body)
            index += 1
        else:
            body_marked = mark(seg.op, body)
        out.append(plain(lead) + body_marked + plain(tail))
    return "".join(out)


def _split_space(text: str) -> tuple[str, str, str]:
    """``text`` as (leading whitespace, body, trailing whitespace)."""
    body = text.strip()
    start = text.index(body)
    return text[:start], body, text[start + len(body) :]


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
