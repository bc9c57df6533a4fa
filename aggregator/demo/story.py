"""The demo's story: a live-updated report of ceasefire talks in Geneva.

Fictional, written for this demo. Each epoch is what the newsroom publishes at
one moment; between epochs headlines are rewritten, paragraphs appended, a
post corrected and one item withdrawn, as happens on a real live story.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape

BASE = "https://newsroom.example/geneva"


@dataclass(frozen=True)
class Item:
    """One feed item or live-blog post."""

    id: str
    title: str
    paragraphs: tuple[str, ...]
    published: str  # ISO 8601, UTC

    @property
    def link(self) -> str:
        """Where the item lives on the newsroom's site."""
        return f"{BASE}/{self.id}"


SUMMIT = Item(
    "summit",
    "Envoys gather in Geneva for first direct talks in two years",
    ("Delegations from both governments arrived at the Palais des Nations on Monday morning.",),
    "2024-05-06T08:00:00+00:00",
)
CONVOY = Item(
    "convoy",
    "Aid convoy waits at the border as talks open",
    ("Forty trucks of food and medicine are waiting at the northern crossing.",),
    "2024-05-06T07:30:00+00:00",
)
PRICES = Item(
    "prices",
    "Grain prices ease on hopes of a deal",
    ("Wheat futures fell two percent in early trading.",),
    "2024-05-06T07:00:00+00:00",
)
STATEMENT = Item(
    "statement",
    "Foreign ministry denies report of a walkout",
    ("A spokesperson said the delegation 'remains at the table'.",),
    "2024-05-06T09:00:00+00:00",
)
REACTION = Item(
    "reaction",
    "Families of detainees welcome the deal",
    ("Relatives gathered outside the venue as the news spread.",),
    "2024-05-06T12:00:00+00:00",
)

SUMMIT_1 = replace(SUMMIT, title="Geneva talks stall over prisoner exchange")
SUMMIT_2 = replace(
    SUMMIT_1,
    paragraphs=(
        "Delegations from both governments arrived at the Palais des Nations on Monday morning"
        " and talked for six hours without a break.",
    ),
)
SUMMIT_3 = replace(SUMMIT_2, title="Geneva talks end with agreement on prisoner exchange")
CONVOY_1 = replace(
    CONVOY,
    paragraphs=(*CONVOY.paragraphs, "UN officials said the first trucks could cross by nightfall."),
)
CONVOY_2 = replace(
    CONVOY_1, paragraphs=(*CONVOY_1.paragraphs, "The first twelve trucks crossed after 18:00.")
)

#: What the feed lists at each epoch, newest first.
FEED_EPOCHS: list[list[Item]] = [
    [SUMMIT, CONVOY, PRICES],
    [STATEMENT, SUMMIT_1, CONVOY_1, PRICES],
    [SUMMIT_2, CONVOY_2, PRICES],  # the statement is withdrawn
    [REACTION, SUMMIT_3, CONVOY_2, PRICES],
]

ARRIVE = Item(
    "post-1", "Delegations arrive", ("Both delegations arrived at 08:15.",), "2024-05-06T08:20:00Z"
)
BEGIN = Item(
    "post-2",
    "Talks begin",
    ("The first session began behind closed doors.",),
    "2024-05-06T09:05:00Z",
)
LUNCH = Item("post-3", "Break for lunch", ("The talks paused for lunch.",), "2024-05-06T12:30:00Z")
DEAL = Item(
    "post-4",
    "Agreement announced",
    ("The mediator announced an agreement on a prisoner exchange.",),
    "2024-05-06T17:40:00Z",
)
ARRIVE_FIXED = replace(
    ARRIVE, paragraphs=("Both delegations arrived at 08:45, half an hour late.",)
)

#: What the live blog shows at each epoch, newest first.
LIVE_EPOCHS: list[list[Item]] = [
    [ARRIVE],
    [BEGIN, ARRIVE],
    [LUNCH, BEGIN, ARRIVE_FIXED],
    [DEAL, BEGIN, ARRIVE_FIXED],  # the lunch post is deleted
]

EPOCHS = len(FEED_EPOCHS)


def _html(paragraphs: tuple[str, ...]) -> str:
    return "".join(f"<p>{escape(p)}</p>" for p in paragraphs)


def rss(epoch: int) -> str:
    """The newsroom's RSS feed at ``epoch``."""
    items = "".join(
        f"""
    <item>
      <title>{escape(i.title)}</title>
      <link>{i.link}</link>
      <guid isPermaLink="false">{i.id}</guid>
      <pubDate>{_rfc822(i.published)}</pubDate>
      <description>{escape(_html(i.paragraphs))}</description>
    </item>"""
        for i in FEED_EPOCHS[epoch]
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0">
  <channel>
    <title>Geneva talks</title>
    <link>{BASE}</link>
    <description>Ceasefire talks coverage (aggregator demo)</description>{items}
  </channel>
</rss>
"""


def _rfc822(iso: str) -> str:
    from datetime import datetime
    from email.utils import format_datetime

    return format_datetime(datetime.fromisoformat(iso), usegmt=True)


def liveblog(epoch: int) -> str:
    """The live-blog page at ``epoch``: schema.org ``LiveBlogPosting`` in JSON-LD."""
    posts = LIVE_EPOCHS[epoch]
    data = {
        "@context": "https://schema.org",
        "@type": "LiveBlogPosting",
        "headline": "Geneva talks: live",
        "url": f"{BASE}/live",
        "liveBlogUpdate": [
            {
                "@type": "BlogPosting",
                "@id": f"{BASE}/live#{p.id}",
                "url": f"{BASE}/live#{p.id}",
                "headline": p.title,
                "articleBody": " ".join(p.paragraphs),
                "datePublished": p.published,
            }
            for p in posts
        ],
    }
    body = "".join(
        f'<article id="{p.id}"><h2>{escape(p.title)}</h2>{_html(p.paragraphs)}</article>'
        for p in posts
    )
    script = json.dumps(data, indent=1).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Geneva talks: live</title>
<script type="application/ld+json">{script}</script></head>
<body><h1>Geneva talks: live</h1>{body}</body></html>
"""
