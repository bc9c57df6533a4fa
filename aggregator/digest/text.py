"""Plain-text and Markdown digests.

Text shows word diffs with colour on a terminal (``color=True``) and with
``[-deleted-]{+inserted+}`` markers otherwise. Markdown escapes every piece of
feed text, so a headline cannot inject links or markup, and marks deletions
``~~struck~~`` and insertions ``**bold**``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date

from aggregator.diff import Segment, render_ansi, render_markers, render_segments, word_diff
from aggregator.digest.model import (
    Digest,
    Event,
    Story,
    counts_line,
    describe,
    short_time,
    text_time,
    window,
)

_INDENT = " " * 9
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~])")


def render_text(digest: Digest, *, color: bool = False, today: date | None = None) -> str:
    """The digest as plain text (ANSI colour when ``color``).

    Times are ``HH:MM`` on ``today`` (UTC, default: now) and carry their date otherwise.
    """
    lines = [f"Changes {window(digest)}", counts_line(digest)]
    lines += [
        f"  failing: {f['name']} ({f['failures']}x): {f['last_error']}" for f in digest.failing
    ]
    if digest.empty:
        lines += ["", "Nothing changed."]
    for story in digest.stories:
        lines += ["", *_text_story(story, color, today)]
    return "\n".join(lines) + "\n"


def render_story(story: Story, *, color: bool = False, today: date | None = None) -> str:
    """One story's changes as text (``aggregator history``); times as in ``render_text``."""
    return "\n".join(_text_story(story, color, today)) + "\n"


def _text_story(story: Story, color: bool, today: date | None) -> Iterator[str]:
    bold = ("\x1b[1m", "\x1b[0m") if color else ("", "")
    yield f"{bold[0]}■ {story.title}{bold[1]}  [{story.source}]"
    if story.url:
        yield f"  {story.url}"
    if len(story.headlines) > 1:
        yield "  headlines: " + " → ".join(f"“{h}”" for h in story.headlines)
    for event in story.events:
        yield f"  {text_time(event.at, today)}  {describe(event)}"
        for body in _text_body(event, color):
            yield _INDENT + body.replace("\n\n", "\n").replace("\n", "\n" + _INDENT)


def _text_body(event: Event, color: bool) -> Iterator[str]:
    render = render_ansi if color else render_markers
    if event.retitled:
        yield "headline: " + render(word_diff(event.title_before or "", event.title_after or ""))
    if event.kind == "new" and event.text:
        yield _clip(event.text)
    if event.moved_from != event.moved_to:
        yield f"moved: {event.moved_from} → {event.moved_to}"
    for edit in event.edits:
        if edit.appended is not None:
            yield f"{edit.field} +: " + render([Segment("insert", edit.appended)])
        else:
            yield f"{edit.field}: " + render(list(edit.segments)).strip()


def _clip(text: str, limit: int = 280) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def md_escape(text: str) -> str:
    """Escape Markdown syntax in feed-supplied text."""
    return _MD_SPECIAL.sub(r"\\\1", text.replace("\n", " "))


def render_markdown(digest: Digest) -> str:
    """The digest as Markdown."""
    lines = [f"# Changes {window(digest)}", "", counts_line(digest)]
    for f in digest.failing:
        lines.append(
            f"- failing: **{md_escape(f['name'])}** ({f['failures']}x): "
            f"{md_escape(f['last_error'] or '')}"
        )
    if digest.empty:
        lines += ["", "Nothing changed."]
    for story in digest.stories:
        lines += ["", *_md_story(story)]
    return "\n".join(lines) + "\n"


def _md_story(story: Story) -> Iterator[str]:
    title = md_escape(story.title) or "(untitled)"
    url = story.url if story.url.startswith(("http://", "https://")) else ""
    heading = f"[{title}](<{url.replace('>', '%3E')}>)" if url else title
    yield f"## {heading}"
    yield ""
    yield f"*{md_escape(story.source)}* · entry {story.entry_id}"
    if len(story.headlines) > 1:
        yield ""
        yield "Headlines: " + " → ".join(f"“{md_escape(h)}”" for h in story.headlines)
    yield ""
    for event in story.events:
        yield f"- **{short_time(event.at)}** {describe(event)}"
        if event.kind == "new" and event.text:
            yield f"  > {md_escape(_clip(event.text))}"
        if event.moved_from != event.moved_to:
            moved = f"{md_escape(event.moved_from)} → {md_escape(event.moved_to)}"
            yield f"  - moved: {moved}"
        if event.retitled:
            segments = word_diff(event.title_before or "", event.title_after or "")
            yield f"  - headline: {_md_edit(None, tuple(segments))}"
        for edit in event.edits:
            yield f"  - {edit.field}: {_md_edit(edit.appended, edit.segments)}"


def _md_edit(appended: str | None, segments: tuple[Segment, ...]) -> str:
    if appended is not None:
        return f"added: **{md_escape(appended)}**"
    marks = {"delete": "~~", "insert": "**"}
    return render_segments(
        list(segments), lambda op, body: f"{marks[op]}{md_escape(body)}{marks[op]}", md_escape
    ).strip()
