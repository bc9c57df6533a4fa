"""The diff card: one edit of a story as a self-contained HTML page, made to be photographed.

``card_html`` lays out the source, the headline (with its own word diff when it
changed), the text's word diff (deletions struck in red, insertions in green),
the story's link and the two versions' times, about 1200 px wide. Long texts are
cut around the changes: unchanged stretches shrink to a few words either side,
and past a budget the rest of the changes are counted, not shown.

Safe to show anything a publisher wrote: every piece of text is escaped and
then passed through the one sanitiser of the HTML digest (``clean_html``); the
page declares a Content-Security-Policy that allows no script, no image, no
font and no connection; and it is rendered with JavaScript off and no network
(``aggregator.digest.image``). Pure functions, no I/O.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from aggregator.diff import Segment, condense, render_html, word_diff
from aggregator.sanitize import clean_html, safe_link
from aggregator.store.queries import VersionRow

#: Words of unchanged text kept either side of a change.
CONTEXT_WORDS = 16
#: Characters of body text shown at most; the rest of the changes is counted, not shown.
TEXT_BUDGET = 1500
TITLE_BUDGET = 300
#: About how many characters fill one line of the text at 1200 px; a line break costs as much.
LINE_CHARS = 70
TEXT_LINE_PX = 40  # 26 px type, line-height 1.55
#: The height taken by all but the text (margins, kicker, a two-line headline, footer).
FRAME_PX = 440
#: Shown when the text did not change: the start of the text, for context.
EXCERPT_CHARS = 280

_BLANK_LINES = re.compile(r"\n\s*\n")
_PARAGRAPH = "\u2029"  # stands for a paragraph break until the markup is sanitised

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; font-src 'none';"
    " connect-src 'none'; form-action 'none'; base-uri 'none'"
)
FONTS = (
    '"DejaVu Sans", "Noto Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans Arabic",'
    ' "Noto Sans Hebrew", "Liberation Sans", sans-serif'
)
#: The colours of deleted and inserted runs (a test reads them back from the picture).
DELETED_BG, DELETED_FG = "#ffcfc9", "#8a1010"
INSERTED_BG, INSERTED_FG = "#bff0c0", "#0a5a1a"


@dataclass(frozen=True, slots=True)
class Card:
    """What one card shows: a story's two versions and where they come from."""

    source: str
    link: str
    title_before: str
    title_after: str
    text_before: str
    text_after: str
    version_before: int
    version_after: int
    time_before: str
    time_after: str


def card_for(source: str, link: str, old: VersionRow, new: VersionRow) -> Card:
    """The card comparing ``old`` with ``new`` (the text is the content, else the summary)."""
    use_content = bool(old.content_text or new.content_text)
    field = "content_text" if use_content else "summary_text"
    return Card(
        source=source,
        link=new.link or old.link or link,
        title_before=old.title,
        title_after=new.title,
        text_before=getattr(old, field),
        text_after=getattr(new, field),
        version_before=old.version,
        version_after=new.version,
        time_before=old.seen_at,
        time_after=new.seen_at,
    )


def card_html(card: Card, *, width: int = 1200, max_height: int = 2000) -> str:
    """The card as one HTML page (see the module docstring)."""
    retitled = card.title_before != card.title_after
    changed = card.text_before != card.text_after
    what = " and ".join(
        w for w, on in (("headline changed", retitled), ("text edited", changed)) if on
    )
    if retitled:
        headline = _diff_markup(word_diff(card.title_before, card.title_after), TITLE_BUDGET)
    else:
        headline = _text(_cut(card.title_after, TITLE_BUDGET))
    if changed:
        segments = condense(word_diff(card.text_before, card.text_after), context=CONTEXT_WORDS)
        body = _diff_markup(segments, text_budget(width, max_height))
    else:
        body = f'<span class="same">{_text(_cut(card.text_after, EXCERPT_CHARS))}</span>'
    link = safe_link(card.link)
    return _PAGE.format(
        csp=CSP,
        css=_css(width, max_height),
        source=_text(card.source),
        what=_text(what or "no visible change"),
        headline=headline or "(untitled)",
        body=body,
        link=_text(link or "(no link)"),
        times=_text(
            f"v{card.version_before} · {_when(card.time_before)}"
            f"  →  v{card.version_after} · {_when(card.time_after)}"
        ),
    )


def text_budget(width: int, max_height: int) -> int:
    """How much text (characters, a line break counting as a line) fits the picture."""
    lines = max(3, (max_height - FRAME_PX) // TEXT_LINE_PX)
    per_line = max(20, LINE_CHARS * width // 1200)
    return min(TEXT_BUDGET * width // 1200, lines * per_line)


def _diff_markup(segments: list[Segment], budget: int) -> str:
    """The diff as ``<del>``/``<ins>`` HTML, cut to ``budget`` characters, sanitised."""
    shown, more = _budgeted(segments, budget)
    markup = clean_html(render_html(shown)).replace(_PARAGRAPH, '<span class="gap"></span>')
    if more:  # our own words, added after the sanitiser (which drops class attributes)
        plural = "s" if more != 1 else ""
        markup += f'\n<span class="more">… and {more} more change{plural} not shown</span>'
    return markup


def _budgeted(segments: list[Segment], budget: int) -> tuple[list[Segment], int]:
    """The segments that fit in ``budget`` characters (a long one cut), and changes left out."""
    shown: list[Segment] = []
    used = 0
    for index, seg in enumerate(segments):
        room = budget - used
        if room <= 0:
            return shown, _changes(segments[index:])
        text = _BLANK_LINES.sub(_PARAGRAPH, seg.text)  # a small gap, not a blank line
        if _cost(text) > room:
            text = text[: max(room - _cost(text) + len(text), 40)].rstrip() + "…"
        shown.append(Segment(seg.op, text))
        used += _cost(text)
    return shown, 0


def _changes(segments: list[Segment]) -> int:
    """Changes among ``segments``: each stretch of deletions and insertions counts once."""
    ops = [s.op != "equal" for s in segments]
    return sum(1 for i, changed in enumerate(ops) if changed and (i == 0 or not ops[i - 1]))


def _cost(text: str) -> int:
    """Characters, with each line break counted as a whole line."""
    return len(text) + (text.count("\n") + text.count(_PARAGRAPH)) * LINE_CHARS


def _text(text: str) -> str:
    """Plain text for the page: escaped, then through the sanitiser like everything shown."""
    return clean_html(html.escape(text, quote=True))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _when(at: str) -> str:
    """A database time as ``YYYY-MM-DD HH:MM UTC``."""
    return f"{at[:16].replace('T', ' ')} UTC" if at else "?"


def _css(width: int, max_height: int) -> str:
    return f"""
html,body{{margin:0;padding:0;background:#fff}}
.card{{box-sizing:border-box;width:{width}px;max-height:{max_height}px;overflow:hidden;
padding:44px 56px 36px;font-family:{FONTS};color:#1d1d1f;background:#fff}}
.kicker{{font-size:22px;color:#555;margin:0 0 14px}}
.kicker b{{color:#1d1d1f}}
h1{{font-size:40px;line-height:1.3;margin:0 0 26px;font-weight:700;overflow-wrap:anywhere}}
.text{{font-size:26px;line-height:1.55;white-space:pre-wrap;overflow-wrap:anywhere;
max-height:{max(120, max_height - FRAME_PX + 20)}px;overflow:hidden}}
del{{background:{DELETED_BG};color:{DELETED_FG};text-decoration:line-through;
text-decoration-thickness:2px}}
ins{{background:{INSERTED_BG};color:{INSERTED_FG};text-decoration:none}}
del+ins{{margin-inline-start:.2em}}
.same{{color:#333}}.more{{color:#777;font-style:italic}}
.gap{{display:block;height:.45em}}
footer{{margin-top:28px;border-top:2px solid #e2e2e2;padding-top:16px;font-size:20px;
color:#555;line-height:1.5}}
.link{{overflow-wrap:anywhere;color:#1a4d8f}}
"""


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<style>{css}</style></head>
<body><main class="card">
<p class="kicker"><b dir="auto">{source}</b> · {what}</p>
<h1 dir="auto">{headline}</h1>
<div class="text" dir="auto">{body}</div>
<footer><div class="link" dir="ltr">{link}</div><div class="times">{times}</div></footer>
</main></body></html>
"""
