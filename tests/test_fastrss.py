"""The fast RSS reader gives exactly the Items feedparser gives, or steps aside."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aggregator.demo import story as demo_story
from aggregator.parse import fastrss
from aggregator.parse.feed import parse_xml_feed
from tests import crashrig, story

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from feedserver import Feed

RSS = {"content-type": "application/rss+xml; charset=utf-8"}
URL = "http://127.0.0.1:8000/news/feed.xml"


def _bench_bodies() -> list[bytes]:
    feed = Feed(3, 30)
    bodies = [feed.body()]
    for epoch in range(1, 4):
        feed.evolve(epoch)
        bodies.append(feed.body())
    return bodies


def _rss(items: str, channel: str = "<title>T</title>", decl: str = "") -> bytes:
    return f'{decl}<rss version="2.0"><channel>{channel}{items}</channel></rss>'.encode()


#: Hand-written corners of the shape the fast reader accepts (or must refuse).
EDGE_CASES = [
    _rss("<item><title> Spaced \n title </title><link>/relative/path?a=1&amp;b=2</link></item>"),
    _rss("<item><guid>http://example.test/permalink</guid><title>guid as link</title></item>"),
    _rss("<item><guid>relative/guid</guid></item>"),
    _rss("<item><guid isPermaLink='true'>a</guid><link>http://x.test/l</link></item>"),
    _rss("<item><link>http://x.test/l</link><guid>http://x.test/g</guid></item>"),
    _rss("<item><guid isPermaLink='FALSE'>a</guid></item>"),
    _rss("<item><title><![CDATA[<b>bold</b> &amp; cdata]]></title></item>"),
    _rss(
        "<item><description>&lt;p&gt;Caf\u00e9 \u2014 \u0080 \u0093q\u0094&lt;/p&gt;</description>"
        "</item>"
    ),
    _rss("<item><title>Ã©tÃ© mojibake</title></item>"),
    _rss("<item><title>a &amp;amp; b</title><link>http://x.test/?q=1&amp;amp;r=2</link></item>"),
    _rss("<item><pubDate>not a date</pubDate></item><item><pubDate></pubDate></item>"),
    _rss("<item><pubDate>Thu, 10 Mar 2022 07:00:00 +0200</pubDate><title/></item>"),
    _rss("<item><category>a</category><category>b</category><title>t</title></item>"),
    _rss("<item></item><item><link></link><guid>http://x.test/g</guid></item>"),
    _rss("<item><title>t</title></item>", "<title>F</title><ttl>15</ttl><language>en</language>"),
    _rss("<item><title>t</title></item>", "", '<?xml version="1.0" encoding="utf-8"?>'),
    _rss("<item><title>\u00e9</title></item>", "", '<?xml version="1.0" encoding="iso-8859-1"?>'),
    _rss("<item><title>t</title><!-- c --></item>"),
    _rss("<item><title>t<b>x</b></title></item>"),
    _rss("<item><title xml:lang='fr'>t</title></item>"),
    _rss("<item><dc:creator xmlns:dc='http://purl.org/dc/elements/1.1/'>x</dc:creator></item>"),
    _rss("<item><author>a@b.test (A)</author></item>"),
    _rss("<item><enclosure url='http://x.test/a.mp3' length='1' type='audio/mpeg'/></item>"),
    _rss("<item><title>a</title><title>b</title></item>"),
    _rss("<item><title>truncated</title>"),
    b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "x">]><rss><channel><item>'
    b"<title>&e;</title></item></channel></rss>",
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>',
]


def corpus() -> list[tuple[str, bytes, dict[str, str]]]:
    """Every feed body the tests, the demo and the benchmark serve, plus the edge cases."""
    cases = [(f"story-rss-{e}", story.rss(e).encode(), RSS) for e in range(len(story.EPOCHS))]
    cases += [(f"story-atom-{e}", story.atom(e).encode(), RSS) for e in range(len(story.EPOCHS))]
    cases += [(f"demo-{e}", demo_story.rss(e).encode(), RSS) for e in range(demo_story.EPOCHS)]
    cases += [(f"crash-{e}", crashrig.feed_body(1, e).encode(), RSS) for e in (0, 5, 40)]
    cases += [(f"bench-{i}", b, RSS) for i, b in enumerate(_bench_bodies())]
    cases += [(f"edge-{i}", b, RSS) for i, b in enumerate(EDGE_CASES)]
    text_xml = {"content-type": "text/xml"}
    cases += [(f"edge-{i}-text/xml", b, text_xml) for i, b in enumerate(EDGE_CASES)]
    return cases


CORPUS = corpus()


def _slow(body: bytes, headers: dict[str, str]) -> object:
    original = fastrss.read
    fastrss.read = lambda *_args: None  # type: ignore[assignment]
    try:
        return parse_xml_feed(body, url=URL, headers=headers)
    except Exception as exc:  # compare failures too
        return repr(exc)
    finally:
        fastrss.read = original


@pytest.mark.parametrize(("name", "body", "headers"), CORPUS, ids=[c[0] for c in CORPUS])
def test_fast_reader_equals_feedparser(name: str, body: bytes, headers: dict[str, str]) -> None:
    """Whatever the fast reader accepts parses to the same Items, title and ttl as feedparser."""
    try:
        fast = parse_xml_feed(body, url=URL, headers=headers)
    except Exception as exc:
        fast = repr(exc)  # type: ignore[assignment]
    assert fast == _slow(body, headers)


def test_fast_reader_takes_the_common_feeds() -> None:
    """The plain RSS 2.0 feeds of the story, the demo and the benchmark take the fast path."""
    taken = {n for n, body, hdrs in CORPUS if fastrss.read(body, {**hdrs, "content-location": URL})}
    assert {"story-rss-0", "demo-0", "crash-5", "bench-0", "bench-3"} <= taken
    assert not {n for n in taken if n.startswith("story-atom")}


def test_fast_reader_refuses_unusual_documents() -> None:
    """Namespaced elements, attributes, markup in a field, DTDs and broken XML go to feedparser."""
    headers = {**RSS, "content-location": URL}
    for body in EDGE_CASES[17:]:
        assert fastrss.read(body, headers) is None, body
