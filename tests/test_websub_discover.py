"""Hub discovery (Link headers first, then the document) and the signature check.

Documents go through the real feed parser, as in a poll.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from aggregator import config
from aggregator.errors import ConfigError
from aggregator.models import Parsed
from aggregator.parse.feed import FeedParser
from aggregator.websub.discover import Discovery, discover, link_header
from aggregator.websub.signature import new_secret, new_token, sign, signature_ok

URL = "https://news.example/feed.xml"

RSS = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel><title>N</title>
<atom:link href="https://hub.example/?a=1&amp;b=2" rel="hub"/>
<atom:link rel='self' href='/feeds/main.xml' type='application/rss+xml'/>
<item><guid>1</guid><title>One</title>
<atom:link rel="hub" href="https://not-the-feeds-hub.example/"/></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>N</title><id>urn:x</id>
<updated>2024-01-01T00:00:00Z</updated>
<link rel="alternate" href="https://news.example/"/>
<link rel="hub" href="https://pubsubhubbub.example/"/>
<link rel="self" href="https://news.example/atom"/>
<entry><id>urn:1</id><title>One</title><updated>2024-01-01T00:00:00Z</updated>
<link rel="self" href="https://news.example/entry-1"/></entry></feed>"""

JSON_FEED = json.dumps(
    {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "N",
        "feed_url": "https://news.example/feed.json",
        "hubs": [{"type": "rssCloud", "url": "https://cloud.example/"},
                 {"type": "WebSub", "url": "https://websub.example/hub"}],
        "items": [{"id": "1", "title": "One", "content_text": "x"}],
    }
).encode()  # fmt: skip


def parsed(body: bytes, ctype: str = "application/rss+xml") -> Parsed:
    return FeedParser().parse(body, url=URL, headers={"content-type": ctype})


def test_rss_names_its_hub_and_self_with_atom_link() -> None:
    """An RSS channel's atom:link rel=hub/self are read (entities decoded, relative made
    absolute); an item's own links are not the feed's."""
    found = discover({}, parsed(RSS), URL)
    assert found == Discovery(
        "https://hub.example/?a=1&b=2", "https://news.example/feeds/main.xml", "document"
    )


def test_atom_names_its_hub_and_self() -> None:
    """An Atom feed's rel=hub and rel=self links are read; an entry's rel=self is not."""
    found = discover({}, parsed(ATOM, "application/atom+xml"), URL)
    assert (found.hub, found.topic) == (
        "https://pubsubhubbub.example/",
        "https://news.example/atom",
    )


def test_json_feed_names_its_websub_hub() -> None:
    """A JSON Feed's hubs of type WebSub are read (rssCloud is not), feed_url is the topic."""
    found = discover({}, parsed(JSON_FEED, "application/feed+json"), URL)
    assert (found.hub, found.topic) == (
        "https://websub.example/hub",
        "https://news.example/feed.json",
    )


def test_link_headers_come_before_the_document() -> None:
    """Link headers naming a hub win over the document's; their self is the topic."""
    headers = {"link": '<https://h.example/hub>; rel="hub", </canonical.xml>; rel="self"'}
    found = discover(headers, parsed(RSS), URL)
    assert found == Discovery(
        "https://h.example/hub", "https://news.example/canonical.xml", "Link header"
    )


def test_a_link_header_hub_without_self_takes_the_documents_or_the_url() -> None:
    """With a hub but no self in the headers, the topic is the document's self, else the
    URL fetched."""
    headers = {"link": "<https://h.example/hub>; rel=hub"}
    assert discover(headers, parsed(RSS), URL).topic == "https://news.example/feeds/main.xml"
    assert discover(headers, None, URL).topic == URL


def test_nothing_known_without_a_body_and_no_hub_without_one_named() -> None:
    """A 304 with no Link header says nothing (None); a feed naming no hub says so."""
    plain = RSS.replace(b"atom:link", b"atom:nolink")
    assert discover({}, None, URL) is None
    assert discover({}, parsed(plain), URL) == Discovery(None, None, "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('<https://a.example/x,y>; rel="hub self"', [("https://a.example/x,y", {"hub", "self"})]),
        ('<https://a.example/>; title="a, b"; rel=hub, <https://b.example/>; rel="self"',
         [("https://a.example/", {"hub"}), ("https://b.example/", {"self"})]),
        ("<ftp://a.example/>; rel=hub", []),
        ("garbage", []),
    ],
)  # fmt: skip
def test_link_header_parsing(value: str, expected: list[tuple[str, set[str]]]) -> None:
    """Commas inside <...> and quotes do not split links; several rel values are read."""
    assert [(u, set(r)) for u, r in link_header(value, URL)] == expected


def test_signatures_are_hmac_sha256_or_stronger() -> None:
    """sha256, sha384 and sha512 signatures under our secret pass; sha1, another secret,
    a changed body or a missing header do not."""
    secret, body = new_secret(), b"<rss/>"
    assert len(secret) == 64 and len(new_token()) >= 40
    for method in ("sha256", "sha384", "sha512"):
        assert signature_ok(sign(secret, body, method), body, [None, secret])
    sha1 = "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    assert not signature_ok(sha1, body, [secret])
    assert not signature_ok(sign("other", body), body, [secret])
    assert not signature_ok(sign(secret, body), body + b" ", [secret])
    assert not signature_ok(None, body, [secret])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"websub": {"callback": "ftp://x.example/cb"}},
         "x.toml: websub.callback: not an http(s) URL: 'ftp://x.example/cb'"),
        ({"websub": {"callback": "https://x.example/cb?a=1"}},
         "x.toml: websub.callback: give a base URL without ?query or #fragment"),
        ({"websub": {"listen": "8081"}},
         "x.toml: websub.listen: use host:port, e.g. 127.0.0.1:8081, got '8081'"),
        ({"websub": {"safety_poll": 3600}}, "x.toml: websub.safety_poll: "),
        ({"sources": [{"url": "https://a.example/f", "push": "sometimes"}]},
         "x.toml: sources[0].push: must be one of auto, off, got 'sometimes'"),
    ],
)  # fmt: skip
def test_a_bad_websub_setting_names_the_file_and_key(raw: dict[str, Any], message: str) -> None:
    """A bad [websub] key or push value is refused at load, naming the file and the key."""
    with pytest.raises(ConfigError) as caught:
        config.parse(raw, "x.toml")
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_good_websub_setting_is_read() -> None:
    """callback loses a trailing slash; listen gives host and port; durations are read."""
    settings = config.parse(
        {"websub": {"callback": "https://x.example/agg/websub/", "listen": "[::1]:9000",
                    "safety_poll": "2h"}},
        "x.toml",
    ).websub  # fmt: skip
    assert settings.callback == "https://x.example/agg/websub"
    assert settings.address == ("::1", 9000) and settings.safety_poll == 7200
