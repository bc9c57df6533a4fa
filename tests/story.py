"""An evolving story for tests, modelled on a live-updated report of diplomatic talks.

Written for these tests (not copied from anywhere). ``EPOCHS[n]`` is what the
newsroom's feed lists at step n, newest first; ``rss()``/``atom()`` render it.
What happens between epochs:

0 -> 1  "talks" is retitled; "corridors" gains a paragraph; "markets" only gets
        whitespace, a new lastBuildDate and a re-tagged (utm_*) link; "hospital" is new.
1 -> 2  the listing is re-ordered; "corridors" is deleted while older items stay;
        "talks" has a sentence rewritten.
2 -> 3  "corridors" comes back.
3 -> 4  "markets", the oldest, falls off the bottom of the window (not a removal).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from xml.sax.saxutils import escape

BASE = "https://news.example/world"


@dataclass(frozen=True)
class Story:
    guid: str
    title: str
    link: str
    paragraphs: tuple[str, ...]
    published: str  # RFC 822


TALKS = Story(
    "talks",
    "Foreign ministers meet in Antalya for first talks since the invasion",
    f"{BASE}/antalya-talks",
    (
        "The top diplomats of the two countries met on Thursday at a hotel near Antalya.",
        "Turkey's foreign minister acted as facilitator and said the aim was to prepare a"
        " meeting between the two presidents.",
    ),
    "Thu, 10 Mar 2022 07:00:00 GMT",
)
CORRIDORS = Story(
    "corridors",
    "Humanitarian corridors top the agenda as ministers arrive",
    f"{BASE}/corridors",
    ("Aid groups asked for safe passage out of the besieged port city.",),
    "Thu, 10 Mar 2022 06:30:00 GMT",
)
MARKETS = Story(
    "markets",
    "Markets steady ahead of the Turkey-hosted meeting",
    f"{BASE}/markets?utm_source=rss&utm_medium=feed",
    ("Traders watched for any sign of a ceasefire.",),
    "Thu, 10 Mar 2022 06:00:00 GMT",
)
HOSPITAL = Story(
    "hospital",
    "Minister dismisses concerns over strike on maternity hospital",
    f"{BASE}/hospital",
    ("He called the criticism 'pathetic shrieks' and offered no evidence.",),
    "Thu, 10 Mar 2022 09:00:00 GMT",
)

TALKS_1 = replace(TALKS, title="Talks end with 'no progress' towards ceasefire")
CORRIDORS_1 = replace(
    CORRIDORS,
    paragraphs=(
        *CORRIDORS.paragraphs,
        "The Turkish minister said corridors must remain open, especially in the port city.",
    ),
)
MARKETS_1 = replace(
    MARKETS,
    title="  Markets steady ahead of the\n Turkey-hosted   meeting ",
    link=f"{BASE}/markets?utm_source=twitter&utm_campaign=live",
    paragraphs=("Traders  watched for any sign of a\tceasefire.",),
)
TALKS_2 = replace(
    TALKS_1,
    paragraphs=(
        "The top diplomats of the two countries met on Thursday at a hotel near Antalya"
        " and produced no breakthrough on ending the war.",
        TALKS.paragraphs[1],
    ),
)

EPOCHS: list[list[Story]] = [
    [TALKS, CORRIDORS, MARKETS],
    [HOSPITAL, TALKS_1, CORRIDORS_1, MARKETS_1],
    [TALKS_2, HOSPITAL, MARKETS_1],
    [HOSPITAL, TALKS_2, CORRIDORS_1, MARKETS_1],
    [HOSPITAL, TALKS_2, CORRIDORS_1],
]
BUILD_DATES = [f"Thu, 10 Mar 2022 {h:02d}:00:00 GMT" for h in (7, 9, 10, 11, 12)]


def _html(paragraphs: tuple[str, ...]) -> str:
    return "".join(f"<p>{p}</p>" for p in paragraphs)


def rss(epoch: int) -> str:
    """The RSS 2.0 document at ``epoch``."""
    items = "".join(
        f"""
    <item>
      <title>{escape(s.title)}</title>
      <link>{escape(s.link)}</link>
      <guid isPermaLink="false">{s.guid}</guid>
      <pubDate>{s.published}</pubDate>
      <description>{escape(_html(s.paragraphs))}</description>
    </item>"""
        for s in EPOCHS[epoch]
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0">
  <channel>
    <title>World news: live</title>
    <link>{BASE}</link>
    <description>Talks coverage</description>
    <lastBuildDate>{BUILD_DATES[epoch]}</lastBuildDate>{items}
  </channel>
</rss>
"""


def atom(epoch: int) -> str:
    """The same epoch as an Atom feed (ids are tag URIs, content is HTML)."""
    entries = "".join(
        f"""
  <entry>
    <id>tag:news.example,2022:{s.guid}</id>
    <title type="html">{escape(s.title)}</title>
    <link href="{escape(s.link)}"/>
    <updated>2022-03-10T{12 + epoch:02d}:00:00Z</updated>
    <published>{parsedate_to_datetime(s.published).isoformat()}</published>
    <author><name>Staff</name></author>
    <content type="html">{escape(_html(s.paragraphs))}</content>
  </entry>"""
        for s in EPOCHS[epoch]
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>World news (Atom)</title>
  <id>tag:news.example,2022:world</id>
  <updated>2022-03-10T{12 + epoch:02d}:00:00Z</updated>{entries}
</feed>
"""
