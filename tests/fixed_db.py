"""A database built deterministically from the test story, with fixed times.

The real parser, normaliser, detector and ``Store`` write it; only the clock
is fixed (each epoch's fetch time), so digests of it can be compared to golden files.
"""

from __future__ import annotations

from pathlib import Path

from aggregator.detect import detect
from aggregator.normalize import snapshot
from aggregator.parse import get_parser
from aggregator.store import FetchRecord, SourceSpec, Store
from tests import story

#: When each epoch was polled.
EPOCH_TIMES = [f"2022-03-10 {h:02d}:00:00.000" for h in (7, 9, 10, 11, 12)]
HOSTILE_TITLE = "<script>alert(1)</script> and a [link](javascript:alert(2))"
HOSTILE_HTML = (
    '<p>Read <a href="javascript:alert(3)">this</a></p><svg onload="alert(4)"></svg>'
    '<img src=x onerror="alert(5)"><script>alert(6)</script>'
)


def hostile_rss() -> str:
    """An RSS feed whose one item tries to inject script into a digest.

    The title is escaped twice, so after decoding the stored headline really is
    ``<script>…`` text (what a careless publisher's feed produces).
    """
    from xml.sax.saxutils import escape

    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Hostile</title><link>https://evil.example/</link>
<item><title>{escape(escape(HOSTILE_TITLE))}</title><link>javascript:alert(7)</link>
<guid isPermaLink="false">evil-1</guid><description>{escape(HOSTILE_HTML)}</description></item>
</channel></rss>"""


def poll_body(store: Store, source_id: int, body: str, at: str) -> None:
    """Parse, detect and store one body as if fetched at ``at``."""
    url = store.source(source_id)["url"]
    parsed = get_parser("feed").parse(body.encode(), url=url, headers={}, options=None)
    snaps = [snapshot(item, []) for item in parsed.items]
    changes = detect(store.known(source_id), snaps, removals="window", complete=parsed.complete)
    record = FetchRecord(url=url, started_at=at, outcome="changed" if changes else "unchanged")
    store.record_poll(source_id, record, parsed, snaps, changes)


def build(path: Path, *, epochs: int = 5, hostile: bool = False) -> Path:
    """Write the story's first ``epochs`` epochs (and optionally a hostile feed) to ``path``."""
    store = Store.open(path)
    try:
        specs = [SourceSpec("world", "feed", "https://news.example/world/feed.xml", 900)]
        if hostile:
            specs.append(SourceSpec("hostile", "feed", "https://evil.example/feed.xml", 900))
        ids = store.sync_sources(specs)
        for epoch in range(epochs):
            poll_body(store, ids["world"], story.rss(epoch), EPOCH_TIMES[epoch])
        if hostile:
            poll_body(store, ids["hostile"], hostile_rss(), EPOCH_TIMES[1])
    finally:
        store.close()
    return path
