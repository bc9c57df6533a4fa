"""The HTML digest: one self-contained page, inline CSS, no scripts.

Every piece of feed-supplied text is escaped; the only feed HTML shown (the
summary of a new entry) goes through ``aggregator.sanitize.clean_html`` (nh3 with
a short allow-list of tags), and links are kept only when they are http(s).
"""

from __future__ import annotations

import html
from collections.abc import Iterator

from aggregator.diff import render_html as diff_html
from aggregator.diff import word_diff
from aggregator.digest.model import Digest, Event, Story, counts_line, describe, short_time, window
from aggregator.sanitize import clean_html, safe_link

_CSS = """
body{font:16px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;max-width:46rem;margin:2rem auto;
padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.4rem;margin-bottom:.2rem}.counts{color:#555;margin-top:0}
article{border-top:1px solid #ddd;padding:.8rem 0}
h2{font-size:1.15rem;margin:.2rem 0}h2 a{color:inherit}
.meta,.when{color:#666;font-size:.9rem}.headlines{font-size:.95rem}
ol.events{list-style:none;padding-left:0}ol.events li{margin:.5rem 0}
del{background:#fdd;color:#900}ins{background:#dfd;color:#060;text-decoration:none}
.added{border-left:3px solid #3a3;padding-left:.6rem}
.failing{color:#900}blockquote{margin:.3rem 0 .3rem 1rem;color:#333}
""".strip()


def esc(text: str | None) -> str:
    """Escape feed text for HTML (quotes included, so it is safe in attributes too)."""
    return html.escape(text or "", quote=True)


def safe_url(url: str) -> str | None:
    """``url`` when it is http(s), else ``None`` (no ``javascript:`` or ``data:`` links)."""
    return safe_link(url) or None


def render_page(digest: Digest, *, title: str = "aggregator digest") -> str:
    """The digest as one HTML page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}: {esc(window(digest))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Changes {esc(window(digest))}</h1>",
        f'<p class="counts">{esc(counts_line(digest))}</p>',
    ]
    for f in digest.failing:
        parts.append(
            f'<p class="failing">failing: <b>{esc(f["name"])}</b> ({f["failures"]}x): '
            f"{esc(f['last_error'])}</p>"
        )
    if digest.empty:
        parts.append("<p>Nothing changed.</p>")
    for story in digest.stories:
        parts += list(_story(story))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _story(story: Story) -> Iterator[str]:
    yield "<article>"
    url = safe_url(story.url)
    title = esc(story.title) or "(untitled)"
    heading = f'<a href="{esc(url)}" rel="noopener noreferrer">{title}</a>' if url else title
    yield f"<h2>{heading}</h2>"
    yield f'<div class="meta">{esc(story.source)} · entry {story.entry_id}</div>'
    if len(story.headlines) > 1:
        listed = " → ".join(f"“{esc(h)}”" for h in story.headlines)
        yield f'<p class="headlines">Headlines: {listed}</p>'
    yield '<ol class="events">'
    for event in story.events:
        yield f"<li>{event_html(event)}</li>"
    yield "</ol></article>"


def event_html(event: Event) -> str:
    """One change as an HTML fragment: what changed and its diff."""
    out = [f'<span class="when">{esc(short_time(event.at))}</span> {esc(describe(event))}']
    if event.retitled:
        diff = diff_html(word_diff(event.title_before or "", event.title_after or ""))
        out.append(f"<div>headline: {diff}</div>")
    if event.kind == "new":
        body = clean_html(event.summary_html) if event.summary_html else esc(event.text)
        if body.strip():
            out.append(f"<blockquote>{body}</blockquote>")
    if event.moved_from != event.moved_to:  # links as text: an old one may be gone
        moved = f"{esc(event.moved_from)} → {esc(event.moved_to)}"
        out.append(f'<div class="moved">moved: {moved}</div>')
    for edit in event.edits:
        if edit.appended is not None:
            out.append(
                f'<div class="added">{esc(edit.field)} added: <ins>{esc(edit.appended)}</ins></div>'
            )
        else:
            out.append(f"<div>{esc(edit.field)}: {diff_html(list(edit.segments))}</div>")
    return "\n".join(out)
