"""``kind = "liveblog"``: one entry per post of a live-blog page, plus one for the page.

Posts are read, in order of preference, from

1. schema.org ``LiveBlogPosting`` JSON-LD: its ``liveBlogUpdate`` items
   (``headline``, ``articleBody``, ``datePublished``, ``dateModified``,
   ``url``/``@id``, ``author``), wherever the node sits (``@graph``, lists,
   several script blocks; an invalid block is skipped with a warning);
2. the CSS ``selectors`` of the source's config, when the page has no such
   JSON-LD posts.

A post's key is its id (``@id``/``url``, or the ``id`` selector), else
``time:<first published time>``, else a hash of its text as first seen, so an
edited body is a ``changed`` post, not a deletion plus a new one.

A post's link is its own: its ``url``, else its ``@id`` when that is a URL or
a ``#fragment``, else (selectors) the ``href`` its ``id`` selector found, else
the page URL plus ``#`` and the post element's HTML ``id``; else it has none.
The page entry keeps the page's canonical link.

The page itself (headline and description) is the entry keyed ``page``,
listed first and without a published date, so it never counts as an "older
post still listed" when deciding removals. A page on which no post was found
is a ``ParseError`` saying why (no ``LiveBlogPosting`` JSON-LD, a JSON-LD block
that is not valid JSON or nested too deeply, the post selector matched
nothing): the poll is recorded as failed and nothing is removed (a redesign
must not delete history, and must not pass silently either).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, field_validator
from selectolax.lexbor import LexborHTMLParser, LexborNode

from aggregator.errors import ParseError
from aggregator.models import Item, Parsed
from aggregator.normalize import VOLATILE_PATTERNS, clean_text, html_to_text, unique_keys
from aggregator.parse.markup import (
    as_list,
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
    text_to_html,
)
from aggregator.timeutil import iso_to_db

#: The key of the entry that tracks the live blog's own headline and description.
PAGE_KEY = "page"
_ID_ATTRS = ("id", "data-post-id", "data-id")


class LiveblogSelectors(BaseModel):
    """CSS selectors for live blogs without ``LiveBlogPosting`` JSON-LD.

    ``post`` matches each post; the others are looked up inside a post.
    ``id`` may be ``@attribute`` (an attribute of the post element) or a
    selector (the element's ``href``, else its text). Without ``id`` the post's
    ``id``/``data-post-id``/``data-id`` attribute is used. ``time`` reads the
    ``datetime`` attribute, else the text; it defaults to the post's ``<time>``.
    ``body`` defaults to the whole post.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    post: str
    id: str = ""
    title: str = ""
    body: str = ""
    time: str = ""

    @field_validator("post")
    @classmethod
    def _post(cls, value: str) -> str:
        return check_selector(value)

    @field_validator("title", "body", "time")
    @classmethod
    def _css(cls, value: str) -> str:
        return check_selector(value) if value else value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return value if not value or value.startswith("@") else check_selector(value)


class LiveblogOptions(BaseModel):
    """Keys a ``kind = "liveblog"`` source may set besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    selectors: LiveblogSelectors | None = None


class LiveblogParser:
    """``kind = "liveblog"``: each post is an entry with its own versions."""

    kind: ClassVar[str] = "liveblog"
    Options: ClassVar[type[BaseModel]] = LiveblogOptions
    volatile = VOLATILE_PATTERNS

    def parse(
        self,
        body: bytes,
        *,
        url: str,
        headers: Mapping[str, str],
        options: LiveblogOptions | None = None,
    ) -> Parsed:
        """Read the posts and the page entry of a live-blog page."""
        options = options or LiveblogOptions()
        tree = load_html(body, headers, kind=self.kind)
        nodes, warnings = json_ld(tree)
        blogs = [n for n in nodes if has_type(n, "LiveBlogPosting")]
        posts = [p for blog in blogs for p in _jsonld_posts(blog, url)]
        if not posts and options.selectors is not None:
            posts = _selector_posts(tree, options.selectors, url)
        if not posts:
            raise ParseError(no_posts_reason(bool(blogs), warnings, options.selectors))
        keys = unique_keys(p.key for p in posts)
        posts = [_rekey(p, k) for p, k in zip(posts, keys, strict=True)]
        page = _page_item(tree, blogs[0] if blogs else {}, url)
        ends = iso_to_db(text_of(blogs[0].get("coverageEndTime"))) if blogs else None
        return Parsed(items=[page, *posts], title=page.title, warnings=warnings, ends_at=ends)


def no_posts_reason(
    found_blog: bool, jsonld_warnings: list[str], selectors: LiveblogSelectors | None
) -> str:
    """Why a live-blog page gave no post, in words a user can act on."""
    if found_blog:
        why = "its LiveBlogPosting JSON-LD lists no liveBlogUpdate posts"
    elif jsonld_warnings:
        why = "; ".join(w.removesuffix(", skipped") for w in jsonld_warnings)
        why = why.replace(", skipped:", ":")
    else:
        why = "the page has no schema.org LiveBlogPosting JSON-LD"
    if selectors is None:
        hint = '; to read posts from the HTML instead, set selectors = { post = "CSS selector" }'
    else:
        hint = f"; and the post selector {selectors.post!r} matched nothing on the page"
    return f"no live-blog posts found: {why}{hint}"


def _rekey(item: Item, key: str) -> Item:
    if item.key == key:
        return item
    return Item(key, item.title, item.link, item.author, item.summary, item.content,
                item.published, item.updated)  # fmt: skip


def post_key(ident: str, time: str, text: str) -> str:
    """A post's stable key: its id, else its first published time, else a text hash."""
    if ident := ident.strip():
        return ident
    if time := time.strip():
        return f"time:{time}"
    digest = hashlib.sha256(clean_text(html_to_text(text)).encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def _jsonld_posts(blog: Mapping[str, Any], url: str) -> list[Item]:
    posts = []
    for update in as_list(blog.get("liveBlogUpdate")):
        if not isinstance(update, dict):
            continue
        published_raw = text_of(update.get("datePublished"))
        body = text_of(update.get("articleBody")) or text_of(update.get("text"))
        ident = text_of(update.get("@id")) or text_of(update.get("url"))
        link = text_of(update.get("url")) or (ident if ident.startswith(("http", "#")) else "")
        posts.append(
            Item(
                key=post_key(ident, iso_to_db(published_raw) or published_raw, body),
                title=text_of(update.get("headline")),
                link=urljoin(url, link) if link else "",
                author=author_names(update.get("author")),
                content=text_to_html(body),
                published=iso_to_db(published_raw),
                updated=iso_to_db(text_of(update.get("dateModified"))),
            )
        )
    return posts


def _selector_posts(tree: LexborHTMLParser, sel: LiveblogSelectors, url: str) -> list[Item]:
    posts = []
    for node in tree.css(sel.post):
        ident, link = _selected_id(node, sel.id, url)
        if not link and (anchor := (node.attributes.get("id") or "").strip()):
            link = urljoin(url, f"#{anchor}")  # the post's own place on the page
        time_node = node.css_first(sel.time or "time")
        time_raw = ""
        if time_node is not None:
            time_raw = (time_node.attributes.get("datetime") or "").strip() or node_text(time_node)
        body_node = node.css_first(sel.body) if sel.body else node
        body = (body_node.inner_html or "") if body_node is not None else ""
        published = iso_to_db(time_raw)
        posts.append(
            Item(
                key=post_key(ident, published or time_raw, body),
                title=node_text(node.css_first(sel.title)) if sel.title else "",
                link=link,
                content=body,
                published=published,
            )
        )
    return posts


def _selected_id(node: LexborNode, spec: str, url: str) -> tuple[str, str]:
    """The post's id and permalink (if the id came from an ``href``)."""
    if not spec:
        attrs = node.attributes
        return next((attrs[a] or "" for a in _ID_ATTRS if attrs.get(a)), ""), ""
    if spec.startswith("@"):
        return node.attributes.get(spec[1:]) or "", ""
    found = node.css_first(spec)
    if found is None:
        return "", ""
    href = (found.attributes.get("href") or "").strip()
    return (href, urljoin(url, href)) if href else (node_text(found), "")


def _page_item(tree: LexborHTMLParser, blog: Mapping[str, Any], url: str) -> Item:
    return Item(
        key=PAGE_KEY,
        title=text_of(blog.get("headline")) or page_title(tree),
        link=canonical_link(tree, url),
        summary=text_of(blog.get("description"))
        or meta(tree, "og:description", "description", "twitter:description"),
        updated=iso_to_db(text_of(blog.get("dateModified"))),
    )
