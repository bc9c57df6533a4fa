"""Untrusted bytes never hurt the parsers, and a body that yields nothing is a loud failure.

Each case calls a parser of ``aggregator.parse.PARSERS`` directly with bytes
written here, modelled on a live-updated story of diplomatic talks, and
asserts the exact reason a user would read in ``fetches.error``. The last
case runs the entity bomb through the real pipeline against the hostile
server of ``tests/test_hostile.py``.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import feedparser
import pytest

from aggregator.errors import ParseError
from aggregator.models import Parsed
from aggregator.parse import PARSERS, fastrss, validate_options
from aggregator.parse.page import _trafilatura
from tests import hostile_server as hs
from tests.test_hostile import Rig
from tests.test_hostile import rss as hostile_rss

URL = "https://news.example/world/antalya-talks/feed.xml"
RSS_UTF8 = {"content-type": "application/rss+xml; charset=utf-8"}
RSS = {"content-type": "application/rss+xml"}
HTML = {"content-type": "text/html; charset=utf-8"}

REFUSED = (
    "refused: the document declares XML entities in its DTD (<!ENTITY {} ...>);"
    " entity expansion is disabled for safety"
)
BILLION = "".join(
    f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' if i else '<!ENTITY lol0 "lol">' for i in range(10)
)
BIG_ENTITY = '<!ENTITY a "' + "Ceasefire? " * 9_100 + '">'  # ~100 KB of text

TALKS = "Ministers meet in Antalya for the first talks since the invasion"
CORRIDORS = "Humanitarian corridors top the agenda"
NO_PROGRESS = "Talks end with no progress on a ceasefire"


def rss(
    items: list[tuple[str, str]],
    *,
    prolog: str = "",
    decl: str = '<?xml version="1.0" encoding="utf-8"?>',
    version: str = "2.0",
) -> str:
    """An RSS document of (guid, title) items, the text used as given."""
    body = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title>"
        "<pubDate>Thu, 10 Mar 2022 07:00:00 GMT</pubDate></item>"
        for guid, title in items
    )
    return (
        f'{decl}{prolog}<rss version="{version}"><channel><title>Antalya talks</title>'
        f"<link>https://news.example/world</link><description>Live</description>"
        f"{body}</channel></rss>"
    )


def atom(entries: list[tuple[str, str]], *, prolog: str = "") -> str:
    """An Atom document of (id, title) entries (feedparser's strict parser reads it)."""
    body = "".join(
        f"<entry><id>urn:talks:{ident}</id><title>{title}</title>"
        "<updated>2022-03-10T07:00:00Z</updated></entry>"
        for ident, title in entries
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Antalya talks</title><id>urn:talks</id><updated>2022-03-10T07:00:00Z</updated>"
        f"{body}</feed>"
    )


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Import trafilatura once, outside the timed parses."""
    _trafilatura()


def parse(kind: str, body: bytes, headers: dict[str, str], options: Any = None) -> Parsed:
    """One parse, which must finish within a second."""
    started = time.monotonic()
    try:
        return PARSERS[kind].parse(body, url=URL, headers=headers, options=options)
    finally:
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"parse took {elapsed:.2f}s"


def reason(kind: str, body: bytes, headers: dict[str, str], options: Any = None) -> str:
    """The ParseError message the parse must raise."""
    with pytest.raises(ParseError) as info:
        parse(kind, body, headers, options)
    return str(info.value)


def bounded_reason(body: bytes, headers: dict[str, str]) -> str:
    """``reason`` of a feed whose parse must also stay under 16 MB of Python allocations."""
    tracemalloc.start()
    try:
        return reason("feed", body, headers)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 16 * 2**20, f"parse allocated {peak / 2**20:.0f} MB"


def titles(parsed: Parsed) -> list[str]:
    return [item.title for item in parsed.items]


# --- entity declarations: refused before any parser sees them -------------------------------


def test_entity_bomb_in_plain_rss_is_refused_before_the_fast_reader() -> None:
    """One ~100 KB entity referenced 100,000 times in RSS 2.0: refused, nothing expanded."""
    items = [("talks", TALKS), ("bomb", "&a;" * 100_000)]
    body = rss(items, prolog=f"<!DOCTYPE rss [{BIG_ENTITY}]>").encode()
    assert len(body) > 300_000
    assert fastrss.read(rss(items[:1]).encode(), {**RSS, "content-location": URL}) is not None
    assert bounded_reason(body, RSS) == REFUSED.format("a")


def test_billion_laughs_in_atom_is_refused_before_feedparser_strict() -> None:
    """Nested entities in an Atom document (expat's path): refused."""
    clean = atom([("talks", TALKS)]).encode()
    assert not feedparser.parse(clean).bozo  # without the DTD this document is read strictly
    body = atom([("talks", "&lol9;")], prolog=f"<!DOCTYPE feed [\n{BILLION}\n]>").encode()
    assert bounded_reason(body, RSS) == REFUSED.format("lol0")


def test_entity_bomb_in_malformed_xml_is_refused_before_feedparser_loose() -> None:
    """A not-well-formed document goes to feedparser's loose parser: refused before it."""
    items = [("talks", TALKS), ("bomb", "&a;" * 50_000 + "<b>unclosed")]
    clean = rss([items[0], ("broken", "<b>unclosed")]).encode()
    loose = feedparser.parse(clean, response_headers=RSS)
    assert loose.bozo and loose.entries  # without the DTD the loose parser reads it
    body = rss(items, prolog=f"<!DOCTYPE rss [{BIG_ENTITY}]>").encode()
    assert bounded_reason(body, RSS) == REFUSED.format("a")


def test_one_line_doctype_with_nested_entities_is_refused() -> None:
    """A DOCTYPE and its nested entities written on one line (no newline anywhere)."""
    body = rss([("lol", "&lol9;")], prolog=f"<!DOCTYPE rss [{BILLION}]>", decl="").encode()
    assert b"\n" not in body
    assert reason("feed", body, RSS) == REFUSED.format("lol0")


def test_parameter_entities_are_refused() -> None:
    """``<!ENTITY % ...>`` declarations, used to build other declarations, are refused."""
    prolog = "<!DOCTYPE rss [<!ENTITY % talks \"<!ENTITY t 'Antalya'>\"> %talks;]>"
    body = rss([("talks", "&t;")], prolog=prolog).encode()
    assert reason("feed", body, RSS) == REFUSED.format("% talks")


def test_external_system_entity_is_refused() -> None:
    """An entity naming a local file is refused, never read."""
    prolog = '<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    body = rss([("talks", "Ministers &secret;")], prolog=prolog).encode()
    assert reason("feed", body, RSS) == REFUSED.format("secret")


def test_entity_behind_a_comment_holding_markup_is_refused() -> None:
    """A ``<tag>`` inside a comment before the DOCTYPE does not end the searched prolog."""
    prolog = f"<!-- mirror of <rss> by the wire desk --><!DOCTYPE rss [{BILLION}]>"
    body = rss([("lol", "&lol9;")], prolog=prolog).encode()
    assert reason("feed", body, RSS) == REFUSED.format("lol0")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
def test_entities_in_utf16_and_utf32_documents_are_refused(codec: str) -> None:
    """The prolog is checked as decoded (BOM or not), not as ASCII bytes."""
    declared = "utf-32" if "32" in codec else "utf-16"
    decl = f'<?xml version="1.0" encoding="{declared}"?>'
    text = rss([("lol", "&lol9;")], prolog=f"<!DOCTYPE rss [{BILLION}]>", decl=decl)
    body = text.encode(codec)
    assert b"<!ENTITY" not in body
    assert reason("feed", body, RSS) == REFUSED.format("lol0")
    clean = rss([("talks", TALKS)], decl=decl).encode(codec)
    assert titles(parse("feed", clean, RSS)) == [TALKS]


def test_entities_under_a_utf7_charset_are_refused() -> None:
    """UTF-7 spells ``<`` as ``+ADw-``: the HTTP charset's decoding is what is checked."""
    text = rss([("lol", "&lol9;")], prolog=f"<!DOCTYPE rss [{BILLION}]>", decl="")
    body = text.encode("utf-7").replace(b"<", b"+ADw-")
    assert b"<!ENTITY" not in body
    headers = {"content-type": "application/rss+xml; charset=utf-7"}
    assert reason("feed", body, headers) == REFUSED.format("lol0")


def test_netscape_rss091_doctype_without_internal_subset_still_parses() -> None:
    """RSS 0.91's external Netscape DTD declares nothing inline: the feed is still read."""
    prolog = (
        '<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"\n'
        ' "http://my.netscape.com/publish/formats/rss-0.91.dtd">'
    )
    body = rss([("talks", TALKS), ("corridors", CORRIDORS)], prolog=prolog, version="0.91")
    parsed = parse("feed", body.encode(), RSS)
    assert titles(parsed) == [TALKS, CORRIDORS] and parsed.complete


def test_named_character_entities_of_old_feeds_still_parse() -> None:
    """``<!ENTITY nbsp "&#160;">`` cannot amplify (one character): the feed is read, expanded."""
    prolog = (
        '<!DOCTYPE rss [<!ENTITY nbsp "&#160;"> <!ENTITY mdash \'&#x2014;\'> <!ENTITY deg "°">]>'
    )
    body = rss([("talks", "Talks&nbsp;resume &mdash; 21&deg; in Antalya")], prolog=prolog)
    parsed = parse("feed", body.encode(), RSS)
    assert titles(parsed) == ["Talks\u00a0resume \u2014 21° in Antalya"]


def test_a_character_entity_next_to_a_longer_one_is_still_refused() -> None:
    """One harmless declaration does not let a longer one through."""
    prolog = '<!DOCTYPE rss [<!ENTITY nbsp "&#160;"><!ENTITY talks "Ceasefire? Ceasefire?">]>'
    body = rss([("talks", "&talks;&talks;")], prolog=prolog)
    assert reason("feed", body.encode(), RSS) == REFUSED.format("talks")


def test_entity_text_inside_an_item_is_not_a_declaration() -> None:
    """``<!ENTITY`` written in CDATA inside an item is text, not a reason to refuse."""
    title = "<![CDATA[Explainer: why <!ENTITY x> in a feed is refused]]>"
    parsed = parse("feed", rss([("explainer", title)]).encode(), RSS)
    assert titles(parsed) == ["Explainer: why <!ENTITY x> in a feed is refused"]


# --- decoding: one bad byte costs one character -----------------------------------------------

GREEK = "naïve café Ελληνικά: Λαβρόφ και Κουλέμπα"
BROKEN_TITLE = b"Kuleba says \xff\xfe no progress \xe2\x80 on corridors"
REPAIRED_TITLE = "Kuleba says \ufffd\ufffd no progress \ufffd on corridors"


def _mixed(decl: str) -> bytes:
    """One item with invalid UTF-8 next to one with valid non-ASCII text."""
    return (
        rss([("greek", GREEK), ("broken", "BROKEN")], decl=decl)
        .encode()
        .replace(b"BROKEN", BROKEN_TITLE)
    )


@pytest.mark.parametrize(
    ("decl", "headers"),
    [
        ('<?xml version="1.0" encoding="utf-8"?>', RSS),
        ('<?xml version="1.0"?>', RSS_UTF8),
        ('<?xml version="1.0"?>', RSS),
        ("", {"content-type": "text/xml"}),
    ],
    ids=["xml-declaration", "http-charset", "undeclared", "undeclared-text/xml"],
)
def test_invalid_utf8_in_one_item_costs_only_those_characters(
    decl: str, headers: dict[str, str]
) -> None:
    """The valid Greek and accented title is stored exactly; the bad bytes become U+FFFD."""
    parsed = parse("feed", _mixed(decl), headers)
    assert titles(parsed) == [GREEK, REPAIRED_TITLE]
    assert "3 invalid UTF-8 byte sequences were replaced with U+FFFD" in parsed.warnings


def test_correctly_declared_latin1_and_cp1252_feeds_are_untouched() -> None:
    """Legacy charsets declared in the XML declaration are read as declared."""
    latin = "Genève: naïve hopes for a café-table ceasefire"
    body = rss([("geneva", latin)], decl='<?xml version="1.0" encoding="iso-8859-1"?>')
    assert titles(parse("feed", body.encode("latin-1"), RSS)) == [latin]
    quoted = "“No progress” in Antalya – ministers leave"
    body = rss([("quoted", quoted)], decl='<?xml version="1.0" encoding="windows-1252"?>')
    assert titles(parse("feed", body.encode("cp1252"), RSS)) == [quoted]


def test_undeclared_cp1252_feed_still_gets_feedparser_fallback() -> None:
    """No declaration and no valid UTF-8 at all: feedparser's windows-1252 fallback reads it."""
    quoted = "“No progress” in Antalya – Lavrov’s café diplomacy"
    body = rss([("quoted", quoted)], decl='<?xml version="1.0"?>').encode("cp1252")
    parsed = parse("feed", body, RSS)
    assert titles(parsed) == [quoted]
    assert not any("U+FFFD" in w for w in parsed.warnings)


def test_json_feed_with_invalid_utf8_keeps_its_other_items() -> None:
    """A JSON Feed with one invalid byte sequence is read, the sequence replaced."""
    body = (
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "Antalya talks", "items": ['
        + b'{"id": "greek", "title": "'
        + GREEK.encode()
        + b'"}, {"id": "broken", "title": "'
        + BROKEN_TITLE
        + b'"}]}'
    )
    parsed = parse("feed", body, {"content-type": "application/feed+json"})
    assert titles(parsed) == [GREEK, REPAIRED_TITLE]


# --- failures are failures -------------------------------------------------------------------


def test_not_well_formed_xml_without_entries_is_a_failure() -> None:
    """A truncated or mis-nested feed that yields no entry fails, naming the XML error."""
    body = rss([]).replace("</channel>", "</chanel>").encode()
    assert reason("feed", body, RSS) == (
        "the feed is not well-formed XML and no entry could be read from it"
        " (line 1, column 166: mismatched tag)"
    )


def test_well_formed_feed_with_no_items_is_a_valid_empty_result() -> None:
    """A feed that lists nothing right now is empty and complete, not an error."""
    parsed = parse("feed", rss([]).encode(), RSS)
    assert parsed.items == [] and parsed.complete and parsed.title == "Antalya talks"


@pytest.mark.parametrize(
    ("kind", "headers", "expected"),
    [
        ("feed", RSS, "empty response body: expected a feed"),
        ("feed", {"content-type": "application/feed+json"}, "empty response body: expected a feed"),
        ("liveblog", HTML, "empty response body: expected an HTML page for kind 'liveblog'"),
        ("page", HTML, "empty response body: expected an HTML page for kind 'page'"),
    ],
    ids=["feed", "json-feed", "liveblog", "page"],
)
@pytest.mark.parametrize("body", [b"", b" \r\n\t "], ids=["empty", "whitespace"])
def test_empty_body_is_a_failure_for_every_kind(
    kind: str, headers: dict[str, str], expected: str, body: bytes
) -> None:
    """An empty (or blank) 200 response is a failure of every kind, never 'unchanged'."""
    assert reason(kind, body, headers) == expected


LIVE_PAGE = """<!doctype html><html><head><title>Antalya talks: live</title>
<script type="application/ld+json">{jsonld}</script></head>
<body><h1>Antalya talks: live</h1>{body}</body></html>"""
NO_JSONLD_HINT = '; to read posts from the HTML instead, set selectors = { post = "CSS selector" }'


def live_page(jsonld: str = "{}", body: str = "") -> bytes:
    return LIVE_PAGE.replace("{jsonld}", jsonld).replace("{body}", body).encode()


def test_jsonld_cut_short_by_a_script_end_tag_says_so() -> None:
    """A ``</script>`` inside a JSON-LD string ends the block early: the reason says so."""
    jsonld = (
        '{"@context": "https://schema.org", "@type": "LiveBlogPosting", "headline": "Talks",'
        ' "liveBlogUpdate": [{"@id": "post-1", "headline": "Embed",'
        ' "articleBody": "Watch: <script src=\\"/player.js\\"></script> the arrival"}]}'
    )
    assert reason("liveblog", live_page(jsonld), HTML) == (
        "no live-blog posts found: JSON-LD block 1 is not valid JSON: Unterminated string"
        " starting at: line 1 column 158 (char 157); it ends inside a string, as when a"
        ' "</script>" inside a JSON-LD string ends the script element early (the publisher'
        ' must write it as "<\\/script>")' + NO_JSONLD_HINT
    )


@pytest.mark.parametrize("opening", ["[", '{"a": '])
def test_jsonld_nested_100000_deep_fails_fast(opening: str) -> None:
    """100,000 levels of JSON-LD nesting: a bounded, quick failure, no RecursionError."""
    closing = "]" if opening == "[" else "}"
    jsonld = opening * 100_000 + "1" + closing * 100_000
    assert reason("liveblog", live_page(jsonld), HTML) == (
        "no live-blog posts found: JSON-LD block 1 is nested too deeply to read" + NO_JSONLD_HINT
    )


def test_deep_jsonld_on_an_article_page_is_skipped_with_a_warning() -> None:
    """The page kind skips the block (trafilatura's own JSON-LD reading survives it too)."""
    jsonld = "[" * 20_000 + "]" * 20_000
    parsed = parse("page", live_page(jsonld, "<p>" + "The talks ended early. " * 20 + "</p>"), HTML)
    assert "JSON-LD block 1 is nested too deeply to read, skipped" in parsed.warnings
    assert parsed.items[0].content.startswith("<p>The talks ended early.")


def test_live_blog_without_posting_jsonld_says_so() -> None:
    """A page with other JSON-LD but no LiveBlogPosting fails, with the way out."""
    jsonld = '{"@context": "https://schema.org", "@type": "WebPage", "name": "Talks"}'
    assert reason("liveblog", live_page(jsonld), HTML) == (
        "no live-blog posts found: the page has no schema.org LiveBlogPosting JSON-LD"
        + NO_JSONLD_HINT
    )


def test_live_blog_posting_without_updates_says_so() -> None:
    """A LiveBlogPosting listing no updates fails: nothing to track, nothing removed."""
    jsonld = '{"@type": "LiveBlogPosting", "headline": "Talks", "liveBlogUpdate": []}'
    assert reason("liveblog", live_page(jsonld), HTML) == (
        "no live-blog posts found: its LiveBlogPosting JSON-LD lists no liveBlogUpdate posts"
        + NO_JSONLD_HINT
    )


def test_live_blog_selector_matching_nothing_says_so() -> None:
    """Configured post selectors that match nothing are named in the reason."""
    options = validate_options("liveblog", {"selectors": {"post": "article.live-post"}})
    body = live_page(body='<div class="post">Ministers arrive</div>')
    assert reason("liveblog", body, HTML, options) == (
        "no live-blog posts found: the page has no schema.org LiveBlogPosting JSON-LD;"
        " and the post selector 'article.live-post' matched nothing on the page"
    )
    found = parse("liveblog", live_page(body='<article class="live-post" id="p1">Hi</article>'),
                  HTML, options)  # fmt: skip
    assert [i.key for i in found.items] == ["page", "p1"]


def test_article_page_without_main_text_is_a_failure() -> None:
    """A consent wall or error page with no article text fails instead of storing nothing."""
    body = live_page(body="<nav><a href='/'>Home</a></nav><p>Accept cookies?</p>")
    assert reason("page", body, HTML) == (
        "no article text found on the page (under 50 characters) (set scope = a CSS selector)"
    )


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(name="rig")
def _rig(tmp_path: Path) -> Iterator[Rig]:
    server = hs.HostileServer().start()
    yield Rig(tmp_path, server)
    server.stop()


def test_entity_bomb_served_by_a_hostile_server_fails_only_its_source(rig: Rig) -> None:
    """The 300 KB entity bomb: the victim fails with the reason, the control is fine."""
    items = [("a", "Alpha", "first"), ("bomb", "&a;" * 100_000, "x")]
    body = hostile_rss(items, prolog=f"<!DOCTYPE rss [{BIG_ENTITY}]>")
    assert len(body) > 300_000
    results, elapsed = rig.turn_hostile(hs.respond(200, body))
    rig.assert_failed(results["victim"], elapsed, REFUSED.format("a"))
    assert rig.last_fetch()["error"] == REFUSED.format("a")
    stored = rig.rows("SELECT max(length(title)) AS n FROM versions")
    assert stored == [{"n": len("Control two")}]
