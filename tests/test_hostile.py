"""Hostile and broken servers: each case ends as a recorded failure or a correct result.

Every case runs the same way: a victim source and a control source are polled
once with good feeds, then the victim's server turns hostile and both are
polled again in one pass. The pass must finish within a bounded time and
memory, the control source must be unaffected, and the victim must end with
its failure recorded (``fetches.error``, ``sources.consecutive_failures``) or
a correct result, and never with an entry marked removed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from aggregator import config as config_mod
from aggregator.cli.poll import poll_once
from aggregator.errors import BlockedAddress
from aggregator.fetch.netguard import check_url
from aggregator.parse import PARSERS
from aggregator.pipeline import PollResult
from aggregator.sanitize import clean_html, safe_link
from tests import hostile_server as hs
from tests.conftest import query_rows, write_config

LIMITS = """
[fetch]
timeout = "2s"
connect_timeout = "1s"
max_bytes = 1048576
max_redirects = 5
[limits]
max_entries = 1000
max_field_chars = 100000
"""
DEADLINE = 2.0
SLACK = 4.0  # scheduling slack on a loaded 2-core CI machine
MAX_RSS_GROWTH_MB = 120


def rss(items: list[tuple[str, str, str]], prolog: str = "") -> bytes:
    """An RSS 2.0 document of (guid, title, description) items; text is used as given."""
    body = "".join(
        f"<item><guid>{g}</guid><title>{t}</title><description>{d}</description>"
        "<pubDate>Thu, 10 Mar 2022 07:00:00 GMT</pubDate></item>"
        for g, t, d in items
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0"><channel>'
        f"<title>t</title>{body}</channel></rss>"
    ).encode()


GOOD = rss([("a", "Alpha", "first"), ("b", "Beta", "second"), ("c", "Gamma", "third")])
CONTROL_1 = rss([("x", "Control one", "c1")])
CONTROL_2 = rss([("y", "Control two", "c2"), ("x", "Control one", "c1")])


def read_rss_kb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Rig:
    """The victim and control sources in one config, polled against the hostile server."""

    def __init__(self, tmp: Path, server: hs.HostileServer) -> None:
        self.tmp = tmp
        self.server = server
        self.db = tmp / "history.db"
        self.limits = LIMITS
        self.max_rss_growth_mb = MAX_RSS_GROWTH_MB
        self.victim: dict[str, Any] = {"name": "victim", "url": server.url("/victim")}

    def config(self) -> config_mod.Config:
        sources = [self.victim, {"name": "control", "url": self.server.url("/control")}]
        path = write_config(self.tmp / "aggregator.toml", sources, db=self.db, extra=self.limits)
        return config_mod.load(path)

    def poll(self) -> dict[str, PollResult]:
        return {r.source: r for r in asyncio.run(poll_once(self.config()))}

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return query_rows(self.db, sql, params)

    def victim_row(self) -> dict[str, Any]:
        return self.rows("SELECT * FROM sources WHERE name = 'victim'")[0]

    def last_fetch(self) -> dict[str, Any]:
        return self.rows(
            "SELECT f.* FROM fetches f JOIN sources s ON s.id = f.source_id"
            " WHERE s.name = 'victim' ORDER BY f.id DESC LIMIT 1"
        )[0]

    def turn_hostile(
        self, handler: hs.Handler, good: hs.Handler | None = None
    ) -> tuple[dict[str, PollResult], float]:
        """Poll good feeds, switch the victim to ``handler``, poll again; return the 2nd pass."""
        self.server.route("/victim", good or hs.respond(200, GOOD))
        self.server.route("/control", hs.respond(200, CONTROL_1))
        first = self.poll()
        assert first["victim"].ok and first["control"].ok, first
        self.server.route("/victim", handler)
        self.server.route("/control", hs.respond(200, CONTROL_2))
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
        before, _ = read_rss_kb()
        started = time.monotonic()
        results = self.poll()
        elapsed = time.monotonic() - started
        _, peak = read_rss_kb()
        growth = (peak - before) / 1024
        assert growth < self.max_rss_growth_mb, f"RSS grew {growth:.0f} MB"
        assert results["control"].ok and results["control"].counts["new"] == 1, results
        removed = self.rows("SELECT count(*) AS n FROM changes WHERE kind = 'removed'")
        assert removed == [{"n": 0}], "a hostile response marked entries removed"
        assert self.rows("SELECT count(*) AS n FROM entries WHERE removed_at IS NOT NULL") == [
            {"n": 0}
        ]
        return results, elapsed

    def assert_failed(self, result: PollResult, elapsed: float, reason: str) -> None:
        """The victim failed with ``reason`` recorded, within the deadline."""
        assert not result.ok
        assert reason in (result.error or ""), result.error
        assert reason in (self.last_fetch()["error"] or "")
        assert self.last_fetch()["outcome"] == "error"
        row = self.victim_row()
        assert row["consecutive_failures"] == 1 and reason in (row["last_error"] or "")
        assert elapsed < DEADLINE + SLACK, f"took {elapsed:.1f}s"


@pytest.fixture(name="hostile")
def _hostile() -> Iterator[hs.HostileServer]:
    server = hs.HostileServer().start()
    yield server
    server.stop()


@pytest.fixture(name="rig")
def _rig(tmp_path: Path, hostile: hs.HostileServer) -> Rig:
    return Rig(tmp_path, hostile)


@dataclass(frozen=True)
class Failing:
    """A hostile response that must end as a recorded failure naming ``reason``."""

    make: Callable[[hs.HostileServer], hs.Handler]
    reason: str


BILLION = "".join(
    f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' if i else '<!ENTITY lol0 "lol">' for i in range(10)
)
FAILING = {
    "html-as-feed": Failing(
        lambda s: hs.respond(
            200, b"<!doctype html><html><p>hi</p></html>", {"Content-Type": "text/html"}
        ),
        "expected a feed but got an HTML page",
    ),
    "json-not-a-feed": Failing(
        lambda s: hs.respond(200, b'{"hello": [1, 2]}', {"Content-Type": "application/json"}),
        "not a JSON Feed",
    ),
    "deeply-nested-json": Failing(
        lambda s: hs.respond(200, b"{" + b'"a":[' * 200_000, {"Content-Type": "application/json"}),
        "not valid JSON",
    ),
    "binary": Failing(
        lambda s: hs.respond(
            200, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 50, {"Content-Type": "image/png"}
        ),
        "not a feed",
    ),
    "empty-body": Failing(lambda s: hs.respond(200, b""), "empty response body"),
    "mislabelled-utf16": Failing(
        lambda s: hs.respond(200, GOOD.replace(b'encoding="utf-8"', b'encoding="utf-16"')),
        "not a feed",
    ),
    "gzip-bomb": Failing(lambda s: hs.gzip_bomb(100 * 2**20), "after decompression"),
    "brotli-bomb": Failing(lambda s: hs.brotli_bomb(200 * 2**20), "after decompression"),
    "endless-chunked": Failing(lambda s: hs.chunked(hs.endless(b"<item>" * 5000)), "too large"),
    "50MB-text-node": Failing(
        lambda s: hs.chunked(iter([GOOD[:200] + b"<title>", *[b"x" * 2**20] * 50, b"</title>"])),
        "too large",
    ),
    "huge-content-length": Failing(
        lambda s: hs.lying_length(10**15, GOOD), "Content-Length 1000000000000000 > limit"
    ),
    "content-length-longer-than-body": Failing(
        lambda s: hs.lying_length(len(GOOD) + 5000, GOOD), "closed the connection"
    ),
    "one-byte-every-half-second": Failing(lambda s: hs.drip(GOOD, 0.5), "timed out"),
    "never-answers": Failing(lambda s: hs.silent(), "timed out"),
    "reset-mid-body": Failing(lambda s: hs.reset_mid_body(GOOD * 20), "connection"),
    "redirect-loop": Failing(
        lambda s: _route(s, "/loop", hs.redirect("/victim"), hs.redirect("/loop")),
        "too many redirects",
    ),
    "long-redirect-chain": Failing(lambda s: _chain(s, 30), "too many redirects"),
    "redirect-to-file": Failing(
        lambda s: hs.redirect("file:///etc/passwd"), "refusing to fetch file"
    ),
    "redirect-to-metadata": Failing(
        lambda s: hs.redirect("http://169.254.169.254/latest/meta-data/"), "link-local"
    ),
    "redirect-to-metadata-decimal": Failing(
        lambda s: hs.redirect("http://2852039166/latest/meta-data/"), "link-local"
    ),
    "redirect-to-metadata-ipv6-mapped": Failing(
        lambda s: hs.redirect("http://[::ffff:169.254.169.254]/"), "link-local"
    ),
    "redirect-to-private-10": Failing(lambda s: hs.redirect("http://10.1.2.3/feed"), "private"),
    "redirect-to-private-192": Failing(lambda s: hs.redirect("http://192.168.0.1/"), "private"),
    "redirect-to-unspecified": Failing(lambda s: hs.redirect("http://0.0.0.0/"), "private"),
    "gone-410": Failing(lambda s: hs.respond(410, b"gone"), "HTTP 410 gone"),
}


def _route(server: hs.HostileServer, path: str, then: hs.Handler, first: hs.Handler) -> hs.Handler:
    server.route(path, then)
    return first


def _chain(server: hs.HostileServer, hops: int) -> hs.Handler:
    for i in range(1, hops):
        server.route(f"/hop/{i}", hs.redirect(f"/hop/{i + 1}"))
    server.route(f"/hop/{hops}", hs.respond(200, GOOD))
    return hs.redirect("/hop/1")


@pytest.mark.parametrize("case", list(FAILING), ids=list(FAILING))
def test_hostile_response_is_a_recorded_failure_of_that_source_only(rig: Rig, case: str) -> None:
    """A hostile response fails only its source, quickly, with a clear recorded reason."""
    spec = FAILING[case]
    results, elapsed = rig.turn_hostile(spec.make(rig.server))
    rig.assert_failed(results["victim"], elapsed, spec.reason)
    versions = rig.rows(
        "SELECT count(*) AS n FROM versions v JOIN entries e ON e.id = v.entry_id"
        " JOIN sources s ON s.id = e.source_id WHERE s.name = 'victim'"
    )
    assert versions == [{"n": 3}]


@pytest.mark.parametrize("form", ["delta-seconds", "http-date"])
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_both_forms_is_recorded(rig: Rig, status: int, form: str) -> None:
    """429/503 are recorded failures that carry the server's Retry-After in seconds."""
    expected = 300.0
    header = "300" if form == "delta-seconds" else formatdate(time.time() + 300, usegmt=True)
    results, elapsed = rig.turn_hostile(hs.respond(status, b"busy", {"Retry-After": header}))
    rig.assert_failed(results["victim"], elapsed, f"HTTP {status}")
    assert results["victim"].retry_after == pytest.approx(expected, abs=5)
    assert rig.last_fetch()["status"] == status


def test_billion_laughs_and_quadratic_entities_are_not_expanded(rig: Rig) -> None:
    """Entity bombs in the DTD are refused, not expanded: a recorded failure, stored text small."""
    quadratic = '<!ENTITY a "' + "A" * 100_000 + '">'
    body = rss(
        [("lol", "&lol9;", "x"), ("quad", "&a;" * 10_000, "y")],
        prolog=f"<!DOCTYPE rss [{BILLION}{quadratic}]>",
    )
    results, elapsed = rig.turn_hostile(hs.respond(200, body))
    rig.assert_failed(results["victim"], elapsed, "declares XML entities in its DTD")
    longest = rig.rows("SELECT max(length(title) + length(summary)) AS n FROM versions")
    assert longest[0]["n"] < 100_001  # [limits] max_field_chars; never 10**9 or 10**9 bytes


def test_external_entities_and_dtds_are_never_read(rig: Rig, tmp_path: Path) -> None:
    """An external entity pointing at a local file or a URL is not read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    prolog = (
        f'<!DOCTYPE rss SYSTEM "{rig.server.url("/dtd")}" [<!ENTITY xxe SYSTEM "file://{secret}">'
        f'<!ENTITY net SYSTEM "{rig.server.url("/entity")}">]>'
    )
    body = rss([("xxe", "A&xxe;B", "C&net;D")], prolog=prolog)
    results, _ = rig.turn_hostile(hs.respond(200, body))
    assert "declares XML entities in its DTD" in (results["victim"].error or "")
    stored = rig.rows("SELECT title, summary FROM versions ORDER BY id DESC LIMIT 1")[0]
    assert "TOP-SECRET" not in stored["title"] + stored["summary"]
    assert rig.server.hits("/dtd") == 0 and rig.server.hits("/entity") == 0


def test_deep_nesting_and_truncated_xml_keep_what_was_read_and_remove_nothing(rig: Rig) -> None:
    """Deeply nested markup is bounded; a truncated document is partial, so nothing is removed."""
    nested = "&lt;b&gt;" * 50_000
    body = rss([("a", "Alpha", "first"), ("deep", "Deep", nested), ("b", "Beta", "second")])
    results, elapsed = rig.turn_hostile(hs.respond(200, body[: len(body) - 300]))
    assert results["victim"].ok and elapsed < DEADLINE + SLACK
    keys = {r["key"].rsplit("/", 1)[-1] for r in rig.rows("SELECT key FROM entries")}
    assert {"a", "b", "c", "deep"} <= keys


def test_nul_bytes_and_mislabelled_latin1_are_read_as_text(rig: Rig) -> None:
    """NUL bytes are dropped and Latin-1 bytes labelled UTF-8 still give readable text."""
    body = rss([("a", "Alpha", "first"), ("n", "Nul\x00byte", "x\x00y")])
    latin = body.replace(b"Alpha", "Café".encode("latin-1"))
    results, _ = rig.turn_hostile(
        hs.respond(200, latin, {"Content-Type": "application/rss+xml; charset=utf-8"})
    )
    assert results["victim"].ok, results["victim"].error
    titles = {r["title"] for r in rig.rows("SELECT title FROM versions")}
    assert "Nulbyte" in titles
    assert not any("\x00" in t for t in titles)


def test_200000_items_are_cut_to_max_entries_before_parsing(rig: Rig) -> None:
    """A feed with 200,000 items stores the first [limits] max_entries and removes nothing."""
    rig.limits = LIMITS.replace("max_bytes = 1048576", "max_bytes = 16777216")
    items = b"".join(
        b"<item><guid>g%d</guid><title>t%d</title></item>" % (i, i) for i in range(200_000)
    )
    body = GOOD.replace(b"</channel>", items + b"</channel>")
    results, elapsed = rig.turn_hostile(hs.respond(200, body))
    assert results["victim"].ok and elapsed < DEADLINE + SLACK + 4
    count = rig.rows("SELECT count(*) AS n FROM entries e JOIN sources s ON s.id = e.source_id"
                     " WHERE s.name = 'victim'")  # fmt: skip
    assert count == [{"n": 1000}]  # a, b, c and g0..g996


def test_long_field_is_cut_to_max_field_chars(rig: Rig) -> None:
    """A text node longer than [limits] max_field_chars is stored cut, not refused."""
    body = rss([("a", "Alpha", "x" * 900_000)])
    results, _ = rig.turn_hostile(hs.respond(200, body))
    assert results["victim"].ok
    [row] = rig.rows("SELECT length(summary) AS n FROM versions WHERE summary LIKE 'xxx%'")
    assert row["n"] == 100_000


def test_etag_changing_over_identical_bytes_makes_no_version(rig: Rig) -> None:
    """A new ETag on every request over the same bytes is recognised as the same body."""
    results, _ = rig.turn_hostile(hs.etag_every_time(GOOD))
    assert results["victim"].outcome == "same_body"
    results = rig.poll()
    assert results["victim"].outcome == "same_body"
    assert rig.rows("SELECT count(*) AS n FROM versions") == [{"n": 5}]  # 3 victim + 2 control


def test_short_redirect_chain_on_loopback_is_followed(rig: Rig) -> None:
    """A loopback source may redirect within loopback, up to [fetch] max_redirects hops."""
    results, _ = rig.turn_hostile(_chain(rig.server, 3))
    assert results["victim"].ok and results["victim"].outcome == "same_body"


@pytest.mark.parametrize(
    "url",
    ["http://2852039166/", "http://169.254.169.254/", "http://10.0.0.1/", "http://[fd00::1]/"],
)
def test_configured_private_or_metadata_source_is_refused(rig: Rig, url: str) -> None:
    """A source configured at a metadata or private address is refused before connecting."""
    rig.victim = {"name": "victim", "url": url}
    rig.server.route("/control", hs.respond(200, CONTROL_1))
    results = rig.poll()
    assert not results["victim"].ok and "refused" in (results["victim"].error or "")
    assert results["control"].ok


async def test_loopback_is_refused_when_the_source_is_not_local() -> None:
    """Loopback is reachable only when the configured source is itself on loopback."""
    with pytest.raises(BlockedAddress, match="loopback"):
        await check_url("http://127.0.0.1:9/", allow_loopback=False, allow_private=False)
    assert await check_url("http://127.0.0.1:9/", allow_loopback=True, allow_private=False)


SCRIPTY = [
    ("s1", "<script>alert(1)</script>Headline", "<p>ok</p><script>alert(2)</script>"),
    ("s2", "Photo", "<img src=x onerror=alert(3)>"),
    ("s3", "Link", '<a href="javascript:alert(4)">click</a>'),
    (
        "s4",
        "Svg",
        '<svg><a xlink:href="javascript:x"><text>t</text></a></svg><svg onload=alert(5)>',
    ),
]


def test_script_payloads_are_stored_verbatim_and_sanitised_for_output(rig: Rig) -> None:
    """Markup with scripts is stored as sent; clean_html/safe_link strip every payload."""
    body = rss([(g, escape(t), escape(d, {'"': "&quot;"})) for g, t, d in SCRIPTY]).replace(
        b"<guid>s3</guid>", b"<guid>s3</guid><link>javascript:alert(6)</link>"
    )
    results, _ = rig.turn_hostile(hs.respond(200, body))
    assert results["victim"].ok
    stored = {r["summary"] for r in rig.rows("SELECT summary FROM versions")}
    assert "<img src=x onerror=alert(3)>" in stored
    assert '<a href="javascript:alert(4)">click</a>' in stored
    for markup in stored:
        cleaned = clean_html(markup).lower()
        for payload in ("<script", "onerror", "javascript:", "<svg", "onload"):
            assert payload not in cleaned, (markup, cleaned)
    titles = {r["title"] for r in rig.rows("SELECT title FROM versions")}
    assert "Headline" in titles and not any("<script" in t for t in titles)
    assert safe_link("javascript:alert(6)") == ""


LIVEBLOG = """<!doctype html><html><head><title>Live</title>
<script type="application/ld+json">{jsonld}</script></head><body><h1>Live</h1></body></html>"""


def _liveblog(updates: str) -> bytes:
    return LIVEBLOG.format(
        jsonld='{"@context": "https://schema.org", "@type": "LiveBlogPosting",'
        f' "headline": "Live", "liveBlogUpdate": [{updates}]}}'
    ).encode()


@pytest.mark.parametrize("variant", ["broken", "huge"])
def test_broken_or_huge_jsonld_on_a_live_blog_removes_nothing(rig: Rig, variant: str) -> None:
    """Broken or huge JSON-LD on a live blog is bounded and never marks posts removed."""
    if "liveblog" not in PARSERS:
        pytest.skip('kind "liveblog" is not registered in aggregator.parse.PARSERS yet')
    rig.victim["kind"] = "liveblog"
    post = (
        '{{"@type": "BlogPosting", "@id": "p{0}", "headline": "Post {0}", "articleBody": "b{0}"}}'
    )
    good = _liveblog(", ".join(post.format(i) for i in range(3)))
    if variant == "broken":
        hostile = good.replace(b'"liveBlogUpdate": [', b'"liveBlogUpdate": [{{{,')
    else:
        hostile = _liveblog(", ".join(post.format(i) for i in range(5_000)))
    html = {"Content-Type": "text/html"}
    results, elapsed = rig.turn_hostile(
        hs.respond(200, hostile, html), good=hs.respond(200, good, html)
    )
    assert elapsed < DEADLINE + SLACK
    victim = results["victim"]
    assert victim.ok or rig.last_fetch()["error"] == victim.error


@pytest.mark.slow
def test_50mb_text_node_within_a_large_body_cap_is_cut_not_fatal(rig: Rig) -> None:
    """With max_bytes raised to 64 MB a 50 MB text node is read and stored cut to the field cap."""
    rig.limits = LIMITS.replace("max_bytes = 1048576", "max_bytes = 67108864").replace(
        'timeout = "2s"', 'timeout = "30s"'
    )
    rig.max_rss_growth_mb = 8 * 64  # peak memory is a small multiple of [fetch] max_bytes
    body = rss([("a", "Alpha", "x" * 50 * 2**20)])
    results, _ = rig.turn_hostile(hs.respond(200, body))
    assert results["victim"].ok
    [row] = rig.rows("SELECT max(length(summary)) AS n FROM versions")
    assert row["n"] == 100_000


@pytest.mark.slow
def test_one_byte_every_few_seconds_hits_the_total_deadline(rig: Rig) -> None:
    """A server dripping one byte every 3 s is cut off at the total deadline, not per read."""
    rig.limits = LIMITS.replace('timeout = "2s"', 'timeout = "10s"')
    results, elapsed = rig.turn_hostile(hs.drip(GOOD, 3.0))
    assert not results["victim"].ok and "timed out" in (results["victim"].error or "")
    assert 9 < elapsed < 10 + SLACK
