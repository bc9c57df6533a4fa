"""``kind = "page"``: one evolving article, tracked as a single entry.

The entry is keyed by the canonical form of the fetched URL; ``link`` holds
the page's ``<link rel="canonical">``. Each version stores the headline
(JSON-LD ``headline``, else ``og:title``, else ``<title>``), the byline and
dates (JSON-LD ``author``/``datePublished``/``dateModified``, else the usual
``<meta>`` tags) and the main text, extracted by trafilatura (navigation,
ads, comments, related-story lists and forms are left out). The text is
stored one ``<p>`` per paragraph, so added paragraphs are told apart from
rewritten ones.

trafilatura is called deterministically: ``deduplicate`` off (its cache is
process-wide and changes output over repeated calls), and the signal-based
extraction timeout off, because we run off the main thread. It is imported on
first use (it pulls in numpy and more, ~15 MB a daemon of feeds never needs).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator
from selectolax.lexbor import LexborHTMLParser

from aggregator.errors import ParseError
from aggregator.models import Item, Parsed
from aggregator.normalize import VOLATILE_PATTERNS, canonical_url, clean_text, normal_title
from aggregator.parse.markup import (
    author_names,
    canonical_link,
    check_selector,
    has_type,
    json_ld,
    load_html,
    meta,
    node_text,
    page_title,
    text_of,
)
from aggregator.timeutil import iso_to_db

ARTICLE_TYPES = ("NewsArticle", "Article", "ReportageNewsArticle", "AnalysisNewsArticle",
                 "BlogPosting", "LiveBlogPosting", "WebPage")  # fmt: skip

#: Less extracted text than this is not an article (an error or consent page,
#: or trafilatura's fallback picking up navigation): the poll fails instead.
MIN_TEXT_CHARS = 50


@functools.cache
def _trafilatura() -> tuple[Any, Any]:
    """trafilatura's ``bare_extraction`` and our config for it (imported on first use)."""
    import trafilatura
    from trafilatura.settings import use_config

    config = use_config()
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    return trafilatura.bare_extraction, config


class PageOptions(BaseModel):
    """Keys a ``kind = "page"`` source may set besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: CSS selector of the element holding the article, when extraction
    #: picks the wrong part of the page.
    scope: str = ""

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return check_selector(value) if value else value


class PageParser:
    """``kind = "page"``: the page is one entry; each edit is a new version."""

    kind: ClassVar[str] = "page"
    Options: ClassVar[type[BaseModel]] = PageOptions
    volatile = VOLATILE_PATTERNS

    def parse(
        self,
        body: bytes,
        *,
        url: str,
        headers: Mapping[str, str],
        options: PageOptions | None = None,
    ) -> Parsed:
        """Read the article's headline, byline, dates and main text."""
        item, warnings = read_article(body, url=url, headers=headers, options=options)
        return Parsed(items=[item], title=item.title, warnings=warnings)


def read_article(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str],
    options: PageOptions | None = None,
    key: str | None = None,
) -> tuple[Item, list[str]]:
    """The article on an HTML page as one ``Item`` (keyed ``key`` or the canonical URL).

    Raises:
        ParseError: not an HTML page, ``scope`` matched nothing, or no main text.
    """
    options = options or PageOptions()
    tree = load_html(body, headers, kind="page")
    nodes, warnings = json_ld(tree)
    article = next((n for n in nodes if has_type(n, *ARTICLE_TYPES) and n.get("headline")), {})
    markup = _scoped_html(tree, options.scope)
    bare_extraction, config = _trafilatura()
    extracted = bare_extraction(
        markup,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        deduplicate=False,
        config=config,
    )
    doc: Any = extracted if extracted is not None else None
    text = (getattr(doc, "text", "") or "") if doc is not None else ""
    title = text_of(article.get("headline")) or page_title(tree) or getattr(doc, "title", "") or ""
    title = html.unescape(title)
    paragraphs = _paragraphs(text, _headlines(tree, options.scope, title, article))
    if sum(map(len, paragraphs)) < MIN_TEXT_CHARS:
        hint = " (check the scope selector)" if options.scope else " (set scope = a CSS selector)"
        raise ParseError(
            f"no article text found on the page (under {MIN_TEXT_CHARS} characters){hint}"
        )
    item = Item(
        key=key or canonical_url(url),
        title=title,
        link=canonical_link(tree, url),
        author=author_names(article.get("author")) or meta(tree, "author", "article:author")
        or (getattr(doc, "author", "") or ""),
        content="".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs),
        published=iso_to_db(text_of(article.get("datePublished")))
        or iso_to_db(meta(tree, "article:published_time")),
        updated=iso_to_db(text_of(article.get("dateModified")))
        or iso_to_db(meta(tree, "article:modified_time")),
    )  # fmt: skip
    return item, warnings


def _scoped_html(tree: LexborHTMLParser, scope: str) -> str:
    if not scope:
        return tree.html or ""
    node = tree.css_first(scope)
    if node is None:
        raise ParseError(f"scope {scope!r} matched nothing on the page")
    head = tree.css_first("head")
    return f"<html>{head.html if head is not None else ''}<body>{node.html}</body></html>"


#: The extracted text's first lines that may be the headline (or a kicker above it).
HEAD_LINES = 3
#: A line above the headline longer than this is article text, not a kicker or label.
KICKER_CHARS = 80


def _loose(text: str) -> str:
    """A headline compared loosely (``normal_title``), after markup and entities."""
    return normal_title(clean_text(text))


def _headlines(
    tree: LexborHTMLParser, scope: str, title: str, article: Mapping[str, Any]
) -> set[str]:
    """Every spelling of the headline the page has: the title, JSON-LD, og:title, ``<h1>``s."""
    root = (tree.css_first(scope) if scope else None) or tree
    spellings = [title, text_of(article.get("headline")), page_title(tree)]
    spellings += [node_text(h1) for h1 in root.css("h1")]
    return {loose for s in spellings if s and (loose := _loose(html.unescape(s)))}


def _paragraphs(text: str, headlines: set[str]) -> list[str]:
    """One paragraph per extracted line, without the headline (tracked as ``title``).

    The headline line is dropped from the first ``HEAD_LINES`` lines, with any short
    kicker or label line above it; it is compared loosely (any spelling the page has).
    """
    lines = [clean_text(line) for line in text.splitlines()]
    lines = [line for line in lines if line]
    for i, line in enumerate(lines[:HEAD_LINES]):
        if _loose(line) in headlines:
            if all(len(above) <= KICKER_CHARS for above in lines[:i]):
                return lines[i + 1 :]
            return lines[:i] + lines[i + 1 :]
    return lines
