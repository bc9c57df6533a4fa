"""Normalisation: what noise is ignored and what identity an item gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.models import Item
from aggregator.normalize import (
    canonical_url,
    clean_text,
    html_to_text,
    item_key,
    snapshot,
    unique_keys,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://news.example/a?utm_source=rss&utm_medium=x", "https://news.example/a"),
        ("HTTPS://News.Example:443/a#live-123", "https://news.example/a"),
        ("https://news.example/a?b=2&a=1&fbclid=zz", "https://news.example/a?a=1&b=2"),
        ("http://news.example:8080/a?id=7&gclid=1", "http://news.example:8080/a?id=7"),
        ("https://news.example", "https://news.example/"),
    ],
)
def test_canonical_url_drops_tracking_and_fragments(url: str, expected: str) -> None:
    """Tracking parameters, fragments and default ports do not make a new link."""
    assert canonical_url(url) == expected


def test_html_to_text_keeps_paragraphs_and_decodes_entities() -> None:
    """Block elements become paragraphs; inline markup and entities disappear."""
    html = (
        "<p>Talks&nbsp;end with <b>no</b>   progress</p><script>x()</script>"
        "<p>Turkey&#8217;s role</p>"
    )
    assert html_to_text(html) == "Talks end with no progress\n\nTurkey\u2019s role"


def test_whitespace_and_entity_spelling_give_the_same_hash() -> None:
    """Noise-only differences produce an identical content hash."""
    a = Item(key="k", title="Talks  end", summary="<p>It&rsquo;s over</p>")
    b = Item(key="k", title="Talks end\n", summary="<p>It\u2019s   over</p>\n")
    assert snapshot(a).content_hash == snapshot(b).content_hash


def test_summary_equal_to_content_is_compared_once() -> None:
    """A feed repeating its body as summary does not double-count an edit."""
    snap = snapshot(Item(key="k", summary="<p>Body</p>", content="<p>Body</p>"))
    assert snap.texts["summary"] == "" and snap.texts["content"] == "Body"


def test_ignore_patterns_remove_volatile_text() -> None:
    """Configured volatile text does not reach the comparison."""
    import re

    ignore = [re.compile(r"Updated \d+ minutes? ago")]
    a = snapshot(Item(key="k", content="<p>Updated 3 minutes ago</p><p>Body</p>"), ignore)
    b = snapshot(Item(key="k", content="<p>Updated 12 minutes ago</p><p>Body</p>"), ignore)
    assert a.content_hash == b.content_hash


@pytest.mark.parametrize(
    ("guid", "link", "title", "expected"),
    [
        ("urn:x:1", "https://n.example/a", "T", "urn:x:1"),
        ("", "https://n.example/a?utm_source=x", "T", "https://n.example/a"),
        ("https://n.example/a?utm_medium=y#c", "", "", "https://n.example/a"),
    ],
)
def test_item_key_prefers_guid_then_link(guid: str, link: str, title: str, expected: str) -> None:
    """Identity is the guid, else the canonical link."""
    assert item_key(guid, link, title) == expected


def test_item_key_without_guid_or_link_hashes_the_title() -> None:
    """An item with neither guid nor link is keyed by a stable hash of its title."""
    key = item_key(None, None, "Talks end")
    assert key.startswith("sha256:") and key == item_key("", "", " Talks  end ")


def test_repeated_keys_are_made_unique() -> None:
    """Two items with one guid in the same feed stay two entries."""
    assert unique_keys(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]


@given(st.text())
def test_clean_text_is_idempotent(text: str) -> None:
    """Normalising twice changes nothing more."""
    once = clean_text(text)
    assert clean_text(once) == once


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_html_to_text_is_idempotent_on_plain_text(text: str) -> None:
    """Text without markup is only cleaned, and cleaning is stable."""
    out = html_to_text(text.replace("<", "").replace("&", ""))
    assert html_to_text(out) == out
