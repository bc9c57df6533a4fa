"""Publisher hints read from feeds and live blogs, and how the daemon takes them."""

from __future__ import annotations

import json

from aggregator.models import Hints
from aggregator.parse.feed import parse_json_feed, update_period
from aggregator.parse.liveblog import LiveblogParser
from aggregator.rhythm_sync import ended

JSON_FEED = {"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": []}


def test_json_feed_expired_says_the_feed_hasended() -> None:
    """``expired: true`` is read; anything else (a string, absent) is not taken as expired."""
    assert parse_json_feed(json.dumps({**JSON_FEED, "expired": True}).encode()).expired
    assert not parse_json_feed(json.dumps({**JSON_FEED, "expired": "true"}).encode()).expired
    assert not parse_json_feed(json.dumps(JSON_FEED).encode()).expired


def test_sy_update_period_is_period_over_frequency_and_ignores_nonsense() -> None:
    """daily/4 is 6 h, weekly alone a week; an unknown period or frequency 0 gives none."""

    def doc(period: str, frequency: str = "") -> bytes:
        freq = f"<sy:updateFrequency>{frequency}</sy:updateFrequency>" if frequency else ""
        return f"<rss><channel><sy:updatePeriod>{period}</sy:updatePeriod>{freq}".encode()

    assert update_period(doc("daily", "4")) == 6 * 3600
    assert update_period(doc(" weekly ")) == 7 * 86400
    assert update_period(doc("fortnightly")) is None
    assert update_period(doc("hourly", "0")) is None
    items_only = b"<rss><channel><item><sy:updatePeriod>hourly</sy:updatePeriod></item>"
    assert update_period(items_only) is None


def test_live_blog_coverage_end_time_ends_it_once_past() -> None:
    """coverageEndTime is read; the daemon calls the blog ended only once that time is past."""
    page = """<html><head><title>Live</title><script type="application/ld+json">
    {"@context": "https://schema.org", "@type": "LiveBlogPosting", "headline": "Live",
     "coverageEndTime": "%s",
     "liveBlogUpdate": [{"@type": "BlogPosting", "@id": "#p1", "headline": "One",
                         "articleBody": "First post.", "datePublished": "2024-05-01T10:00:00Z"}]}
    </script></head><body></body></html>"""
    url, headers = "https://news.example/live", {"content-type": "text/html"}
    past = LiveblogParser().parse(
        (page % "2024-05-01T18:00:00Z").encode(), url=url, headers=headers
    )
    assert past.ends_at == "2024-05-01 18:00:00.000"
    assert ended(past.hints()) == "live blog coverage ended 2024-05-01 18:00 UTC"
    future = LiveblogParser().parse(
        (page % "2999-01-01T00:00:00Z").encode(), url=url, headers=headers
    )
    assert ended(future.hints()) == ""
    assert ended(Hints(expired=True)) == "JSON Feed expired"
