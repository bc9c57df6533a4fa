"""Live blogs and an evolving article for tests, modelled on live coverage of diplomatic talks.

Written for these tests. The HTML templates live in ``tests/fixtures/liveblog``
and ``tests/fixtures/page``; this module fills them per epoch. ``noise`` varies
what changes on every request of a real page (relative timestamps, reader
counters, CSRF tokens, ad slots, related-story lists) and never the news.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass, replace
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
BLOG_URL = "https://news.example/world/live/antalya-talks"


@dataclass(frozen=True)
class Post:
    ident: str
    headline: str
    paragraphs: tuple[str, ...]
    published: str  # ISO 8601


ARRIVE = Post(
    "post-1",
    "Ministers arrive in Antalya",
    ("Both delegations arrived at the hotel near Antalya before dawn.",),
    "2022-03-10T06:00:00Z",
)
CORRIDORS = Post(
    "post-2",
    "Corridors top the agenda",
    ("Aid groups asked for safe passage out of the besieged port city.",),
    "2022-03-10T06:30:00Z",
)
BEGIN = Post(
    "post-3",
    "Talks begin",
    ("The meeting began at a hotel conference room, with Turkey's minister in between.",),
    "2022-03-10T07:00:00Z",
)
END = Post(
    "post-4",
    "Talks end with 'no progress'",
    ("The Ukrainian minister said Moscow is not ready to offer a ceasefire.",),
    "2022-03-10T09:00:00Z",
)
BEGIN_EDITED = replace(
    BEGIN,
    paragraphs=("The meeting began at a hotel conference room near the Mediterranean coast.",),
)
HEADLINE = "Ukraine-Russia talks in Turkey: live updates"
HEADLINE_2 = "Talks end with no ceasefire: live updates"
DESCRIPTION = "Follow the first high-level talks since the invasion."

#: (headline, posts newest first) per epoch of the live blog.
BLOG_EPOCHS: list[tuple[str, list[Post]]] = [
    (HEADLINE, [BEGIN, CORRIDORS, ARRIVE]),
    (HEADLINE, [END, BEGIN_EDITED, CORRIDORS, ARRIVE]),  # new on top, one body edited
    (HEADLINE, [ARRIVE, CORRIDORS, BEGIN_EDITED, END]),  # re-ordered, noise only
    (HEADLINE_2, [END, BEGIN_EDITED, ARRIVE]),  # CORRIDORS deleted, headline changed
    (HEADLINE_2, [END, BEGIN_EDITED, CORRIDORS, ARRIVE]),  # CORRIDORS restored
    (HEADLINE_2, [END, BEGIN_EDITED, CORRIDORS]),  # ARRIVE falls off the bottom
]


def _noise(noise: int) -> dict[str, str]:
    return {
        "ago": str(noise + 2),
        "viewers": f"{1000 + 37 * noise:,}",
        "views": f"{12000 + 911 * noise:,}",
        "token": hashlib.sha1(str(noise).encode()).hexdigest(),
    }


def _paragraph_html(paragraphs: tuple[str, ...], noise: int) -> str:
    # odd noise spells the apostrophe as an entity and adds stray whitespace
    def spell(text: str) -> str:
        return html.escape(text).replace("&#x27;", "&#39;" if noise % 2 else "&apos;")

    sep = "\n      " if noise % 2 else " "
    return sep.join(f"<p>{spell(p)}{'  ' * (noise % 2)}</p>" for p in paragraphs)


def post_jsonld(post: Post, noise: int = 0) -> dict[str, object]:
    """One ``liveBlogUpdate`` item (its body spelled differently for odd ``noise``)."""
    body = "\n".join(post.paragraphs)
    if noise % 2:
        body = body.replace("'", "&#39;").replace(" ", "  ")
    return {
        "@type": "BlogPosting",
        "@id": f"{BLOG_URL}#{post.ident}",
        "url": f"{BLOG_URL}#{post.ident}",
        "headline": post.headline,
        "articleBody": body,
        "datePublished": post.published,
        "author": {"@type": "Person", "name": "Staff reporter"},
    }


def jsonld_blog(headline: str, posts: list[Post], noise: int = 0) -> str:
    """The JSON-LD live blog page: a ``@graph`` with the blog, next to other blocks."""
    graph = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebPage", "@id": BLOG_URL, "name": headline},
            {
                "@type": "LiveBlogPosting",
                "@id": f"{BLOG_URL}#blog",
                "headline": headline,
                "description": DESCRIPTION,
                "coverageStartTime": "2022-03-10T05:00:00Z",
                "liveBlogUpdate": [post_jsonld(p, noise) for p in posts],
            },
        ],
    }
    visible = "".join(
        f'<article id="{p.ident}"><h2>{html.escape(p.headline)}</h2>'
        f"{_paragraph_html(p.paragraphs, noise)}</article>"
        for p in posts
    )
    return render(
        "liveblog/jsonld.html",
        headline=html.escape(headline),
        description=html.escape(DESCRIPTION),
        jsonld=json.dumps(graph, indent=1 + noise % 2),
        posts=visible,
        **_noise(noise),
    )


def blog_epoch(epoch: int, noise: int | None = None) -> str:
    """The JSON-LD live blog at ``epoch`` (noise defaults to the epoch number)."""
    headline, posts = BLOG_EPOCHS[epoch]
    return jsonld_blog(headline, posts, epoch if noise is None else noise)


def selector_post(post: Post, noise: int, *, with_id: bool = True) -> str:
    """One post of the selector-based blog; ``with_id=False`` leaves out its id."""
    ident = f' id="{post.ident}"' if with_id else ""
    return (
        f'    <article class="entry"{ident}>\n'
        f'      <time datetime="{post.published}">{noise + 1} minutes ago</time>\n'
        f"      <h3>{html.escape(post.headline)}</h3>\n"
        f'      <div class="text">{_paragraph_html(post.paragraphs, noise)}</div>\n'
        f'      <span class="share">{noise * 3} shares</span>\n'
        "    </article>"
    )


def selector_blog(headline: str, posts: list[tuple[Post, bool]], noise: int = 0) -> str:
    """A live blog without JSON-LD: ``posts`` are (post, has an id attribute)."""
    return render(
        "liveblog/selectors.html",
        headline=html.escape(headline),
        description=html.escape(DESCRIPTION),
        posts="\n".join(selector_post(p, noise, with_id=i) for p, i in posts),
        **_noise(noise),
    )


def render(template: str, **values: str) -> str:
    """Fill a fixture template's ``{placeholders}``."""
    return (FIXTURES / template).read_text(encoding="utf-8").format(**values)


# -- the evolving article ---------------------------------------------------

TALKS_HEADLINES = (
    "Russia-Ukraine talks under way in Turkey",
    "Russia-Ukraine talks end with 'no progress' towards ceasefire",
    "Russia-Ukraine talks in Turkey end with 'no progress' towards ceasefire",
)
OPENING = (
    "Talks between the top diplomats of the two countries began on Thursday at a hotel near"
    " Antalya, the first high-level meeting since the invasion two weeks ago.",
    "Turkey's foreign minister is acting as facilitator and said the aim was to prepare a"
    " meeting between the two presidents.",
    "Humanitarian corridors and a ceasefire were expected to top the agenda, officials said"
    " before the meeting began.",
)
ADDED = (
    "The meeting wrapped up after about ninety minutes and appeared to produce little progress"
    " toward ending the fighting.",
    "\u201cThey seek our surrender. This is not going to happen,\u201d the Ukrainian minister"
    " told reporters afterwards.",
    "The Turkish minister said he had pushed for a sustainable ceasefire and for humanitarian"
    " corridors to remain open, especially in the besieged port city.",
)
REWRITTEN_LEAD = (
    "Talks between the top diplomats of the two countries produced no breakthrough on ending"
    " the war, the Ukrainian foreign minister said after the meeting near Antalya."
)
#: (headline, paragraphs) per epoch of the article.
PAGE_EPOCHS: list[tuple[str, tuple[str, ...]]] = [
    (TALKS_HEADLINES[0], OPENING),
    (TALKS_HEADLINES[0], OPENING),  # noise only
    (TALKS_HEADLINES[0], OPENING + ADDED),  # three paragraphs appended
    (TALKS_HEADLINES[1], (REWRITTEN_LEAD, *OPENING[1:], *ADDED)),  # headline + lead rewritten
    (TALKS_HEADLINES[2], (REWRITTEN_LEAD, *OPENING[1:], *ADDED)),  # headline only
]
RELATED = ("Markets steady ahead of talks", "Maternity hospital hit", "Sanctions widen", "Oil")


def talks_page(epoch: int, noise: int | None = None) -> str:
    """The evolving article at ``epoch``, with per-request noise."""
    headline, paragraphs = PAGE_EPOCHS[epoch]
    noise = epoch if noise is None else noise
    related = RELATED[noise % 4 :] + RELATED[: noise % 4]
    return render(
        "page/talks.html",
        headline=html.escape(headline),
        paragraphs=_paragraph_html(paragraphs, noise),
        related="".join(
            f'<li><a href="/r/{noise}/{i}">{t}</a></li>' for i, t in enumerate(related)
        ),
        modified=f"2022-03-10T{10 + epoch:02d}:{noise % 60:02d}:00Z",
        **_noise(noise),
    )
