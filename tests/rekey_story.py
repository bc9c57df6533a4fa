"""Stories that move to a new key, and stories that must not be taken for moved ones.

Written for these tests, in the shape of what news feeds do: a slug typo fixed
(same headline, one sentence of the summary edited), a slug rewritten with the
headline kept and the summary edited, a daily briefing whose title never
changes while its URL and text do, two stories whose slugs are fixed in the
same poll, and a live-coverage item replaced by the next day's. The feed's
guids are the links (RSS ``<guid>`` without ``isPermaLink="false"``), so a new
link is a new key.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape

from tests.liveblog_story import render

BASE = "https://news.example/world"


@dataclass(frozen=True)
class Story:
    title: str
    link: str
    paragraphs: tuple[str, ...]
    published: str  # RFC 822
    author: str = "Staff reporter"
    caption: str = ""  # a figure's caption at the top of the description


TYPO = Story(
    "Zelensky and Erdogan discuss grain corridor by phone",
    f"{BASE}/2026/11/28/zelensky-erdgoan-grain-corridor",
    (
        "The two presidents spoke for almost an hour on Friday about reopening the grain"
        " corridor through the Black Sea.",
        "Turkey has offered to host a new round of talks in Istanbul next month.",
        "Officials in Kyiv said the call had been constructive but gave no further details.",
    ),
    "Sat, 28 Nov 2026 08:00:00 GMT",
)
#: The slug's misspelt name corrected; one sentence of the summary edited.
TYPO_FIXED = replace(
    TYPO,
    link=f"{BASE}/2026/11/28/zelensky-erdogan-grain-corridor",
    paragraphs=(
        *TYPO.paragraphs[:2],
        "Officials in Kyiv called the conversation constructive but gave no further details.",
    ),
)
REWRITE = Story(
    "Ministers agree to meet again in Antalya",
    f"{BASE}/2026/11/28/ministers-meeting-antalya",
    (
        "Foreign ministers from both countries agreed on Saturday to meet again in Antalya,"
        " the host city of the first round of talks.",
        "No date was set, but diplomats said the meeting could take place within weeks.",
    ),
    "Sat, 28 Nov 2026 07:30:00 GMT",
)
#: A new slug (a whole new phrase), the headline kept, the summary edited.
REWRITE_NEW = replace(
    REWRITE,
    link=f"{BASE}/2026/11/28/foreign-ministers-second-round-talks",
    paragraphs=(
        "Foreign ministers from both countries agreed on Saturday to meet again in Antalya,"
        " where the first round of talks was held in March.",
        "Turkish diplomats said a date would be announced after consultations with both capitals.",
    ),
)
BRIEFING = Story(
    "Briefing: What Happened Today",
    f"{BASE}/briefing/2026-11-27",
    (
        "Good evening. Here is what you need to know today.",
        "Parliament passed the budget after a night-long session. Storms closed two airports"
        " in the north. The central bank left interest rates unchanged.",
    ),
    "Fri, 27 Nov 2026 18:00:00 GMT",
)
#: The next day's edition: same title, same opening line, new URL and news.
BRIEFING_NEXT = replace(
    BRIEFING,
    link=f"{BASE}/briefing/2026-11-28",
    paragraphs=(
        "Good evening. Here is what you need to know today.",
        "Rail workers announced a strike for next week. A heatwave is forecast for the south."
        " The football league suspended two clubs over unpaid wages.",
    ),
    published="Sat, 28 Nov 2026 18:00:00 GMT",
)
OLDER = Story(
    "Sanctions widen to shipping insurers",
    f"{BASE}/2026/11/27/sanctions-shipping-insurers",
    ("The new measures target companies that insure tankers carrying oil above the cap.",),
    "Fri, 27 Nov 2026 06:00:00 GMT",
)

#: Two stories in one section whose slugs are both fixed in the same poll.
GENEVA = Story(
    "Ceasefire talks stall in Geneva over prisoner exchange",
    f"{BASE}/2026/11/28/ceasfire-talks-geneva",
    (
        "Negotiators in Geneva failed on Saturday to agree the terms of a prisoner exchange,"
        " the main obstacle to a ceasefire.",
        "Both delegations will stay in the city for another day.",
    ),
    "Sat, 28 Nov 2026 10:00:00 GMT",
)
ISTANBUL = Story(
    "Ceasefire talks resume in Istanbul after a week",
    f"{BASE}/2026/11/28/ceasfire-talks-istanbul",
    (
        "Delegations returned to Istanbul on Saturday for a second week of talks on grain"
        " exports and a ceasefire.",
        "The host government said it expected a joint statement by Monday.",
    ),
    "Sat, 28 Nov 2026 09:00:00 GMT",
)
GENEVA_FIXED = replace(GENEVA, link=f"{BASE}/2026/11/28/ceasefire-talks-geneva")
ISTANBUL_FIXED = replace(ISTANBUL, link=f"{BASE}/2026/11/28/ceasefire-talks-istanbul")
#: Live coverage replaced by the next day's: similar headline, same section, new text.
LIVE_15 = Story(
    "Live: ceasefire talks, day 15",
    f"{BASE}/2026/11/28/live-ceasefire-talks-day-15",
    (
        "Follow our live coverage of the talks. Delegations met twice today and exchanged"
        " draft texts on the prisoner exchange.",
    ),
    "Sat, 28 Nov 2026 06:00:00 GMT",
)
LIVE_16 = replace(
    LIVE_15,
    title="Live: ceasefire talks, day 16",
    link=f"{BASE}/2026/11/28/live-ceasefire-talks-day-16",
    paragraphs=(
        "Follow our live coverage of the talks. The Geneva round ended without agreement and"
        " envoys flew home for consultations.",
    ),
    published="Sat, 28 Nov 2026 11:00:00 GMT",
)


def rss(stories: list[Story], *, build: str = "Sat, 28 Nov 2026 12:00:00 GMT") -> str:
    """An RSS 2.0 feed whose guids are the stories' links."""
    items = "".join(
        f"""
    <item>
      <title>{escape(s.title)}</title>
      <link>{escape(s.link)}</link>
      <guid>{escape(s.link)}</guid>
      <author>desk@news.example ({escape(s.author)})</author>
      <pubDate>{s.published}</pubDate>
      <description>{escape(_description(s))}</description>
    </item>"""
        for s in stories
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0">
  <channel>
    <title>World news</title>
    <link>{BASE}</link>
    <description>World coverage</description>
    <lastBuildDate>{build}</lastBuildDate>{items}
  </channel>
</rss>
"""


def _description(story: Story) -> str:
    figure = (
        f'<figure><img src="/img/1.jpg" alt=""><figcaption>{story.caption}</figcaption></figure>'
        if story.caption
        else ""
    )
    return figure + "".join(f"<p>{p}</p>" for p in story.paragraphs)


# -- an article page whose headline is spelt differently in its markup ------------

ARTICLE_PARAGRAPHS = (
    "Talks between the top diplomats of the two countries began on Thursday at a hotel near"
    " Antalya, the first high-level meeting since the invasion two weeks ago.",
    "Turkey's foreign minister is acting as facilitator and said the aim was to prepare a"
    " meeting between the two presidents.",
    "Humanitarian corridors and a ceasefire were expected to top the agenda, officials said"
    " before the meeting began.",
)


def article(
    headline: str,
    *,
    author: str = "Staff reporter",
    caption: str = "The foreign ministers shook hands before the talks began.",
    emphasis: bool = True,
) -> str:
    """The article page: JSON-LD headline with curly quotes, an ``<h1>`` with straight ones
    under a "Live" kicker; ``emphasis`` wraps a phrase of the lead in ``<em>``."""
    lead = ARTICLE_PARAGRAPHS[0]
    if emphasis:
        lead = lead.replace("first high-level meeting", "<em>first high-level meeting</em>")
    paragraphs = "\n".join(
        f"<p>{p if p is lead else html.escape(p)}</p>" for p in (lead, *ARTICLE_PARAGRAPHS[1:])
    )
    straight = headline.replace("\u2018", "'").replace("\u2019", "'")
    return render(
        "rekey/article.html",
        headline_ld=html.escape(headline, quote=False).replace('"', '\\"'),
        h1=html.escape(straight),
        author=html.escape(author),
        caption=html.escape(caption),
        paragraphs=paragraphs,
    )
