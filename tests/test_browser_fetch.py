"""``fetch = "browser"``: pages whose posts exist only after their script ran, in real Chromium.

Every page is served by the local test server; Chromium reaches it only through the
per-fetch SOCKS guard. Polls go through the real pipeline (``aggregator poll``'s code).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator import config as config_mod
from aggregator.errors import ConfigError
from aggregator.schedule_policy import is_transport_error
from tests import story
from tests.browserrig import SHELL, chromium_processes, require_chromium, scripted_data
from tests.conftest import Harness, write_config

HTML = "text/html; charset=utf-8"

#: The static live-blog test's expectations (tests/test_liveblog.py), epoch by epoch.
EXPECTED = [
    [("new", "page", "[]"), ("new", "post-3", "[]"), ("new", "post-2", "[]"),
     ("new", "post-1", "[]")],
    [("new", "post-4", "[]"), ("changed", "post-3", '["content"]')],
    [],
    [("changed", "page", '["title"]'), ("removed", "post-2", "[]")],
    [("restored", "post-2", "[]")],
    [],
]  # fmt: skip


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()


def page(body: str) -> str:
    """A small page running ``body`` as its script (written for these tests)."""
    return (
        "<!DOCTYPE html><html><head><title>t</title></head>"
        f"<body><p>x</p><script>{body}</script></body></html>"
    )


def serve_blog(harness: Harness, epoch: int, path: str = "/live/") -> None:
    harness.server.serve(path, SHELL, content_type=HTML)
    harness.server.serve(path + "data.json", scripted_data(epoch), content_type="application/json")


def fragment_changes(harness: Harness, seen: int, source: str = "live") -> list[tuple[str, ...]]:
    rows = harness.rows(
        "SELECT c.kind, e.key, c.fields FROM changes c JOIN entries e ON e.id = c.entry_id"
        " JOIN sources s ON s.id = e.source_id WHERE s.name = ? ORDER BY c.id",
        (source,),
    )
    return [(r["kind"], r["key"].rsplit("#", 1)[-1], r["fields"]) for r in rows][seen:]


def test_script_rendered_live_blog_is_tracked_post_by_post(harness: Harness) -> None:
    """A blog whose posts and JSON-LD come from a script gives the static blog's events."""
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    harness.add("static", "/live/", kind="liveblog")  # the same page, fetched plainly
    seen = 0
    for epoch, want in enumerate(EXPECTED):
        serve_blog(harness, epoch)
        results = {r.source: r for r in harness.poll()}
        assert results["live"].ok, results["live"].error
        assert "no live-blog posts found" in (results["static"].error or "")
        assert fragment_changes(harness, seen) == want, f"epoch {epoch}"
        seen += len(want)
    [page_entry] = harness.rows(
        "SELECT e.title FROM entries e JOIN sources s ON s.id = e.source_id"
        " WHERE s.name = 'live' AND e.key = 'page'"
    )
    assert page_entry["title"] == "Talks end with no ceasefire: live updates"


def test_identical_rendering_costs_no_write_and_no_event(harness: Harness) -> None:
    """A second rendering of an unchanged page is a same-body poll: no version, no event."""
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    serve_blog(harness, 0)
    [first] = harness.poll()
    counted = "SELECT (SELECT COUNT(*) FROM versions) v, (SELECT COUNT(*) FROM outbox) o"
    counts = harness.rows(counted)
    [second] = harness.poll()
    assert (first.outcome, second.outcome) == ("changed", "same_body")
    assert harness.rows(counted) == counts


def test_page_that_never_settles_fails_alone(harness: Harness) -> None:
    """A page keeping the network busy fails on the time limit; a feed and another page succeed."""
    harness.extra = '[browser]\ntimeout = "3s"\n'
    busy = page("setInterval(() => fetch('/tick'), 150)")
    harness.server.serve("/busy/", busy, content_type=HTML)
    harness.server.serve("/tick", "1", content_type="text/plain")
    harness.server.serve("/feed.xml", story.rss(0))
    serve_blog(harness, 0)
    harness.add("busy", "/busy/", kind="page", fetch="browser")
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    harness.add("feed", "/feed.xml")
    results = {r.source: r for r in harness.poll()}
    assert not results["busy"].ok
    assert "did not settle within 3s" in results["busy"].error
    # the publisher's page, not our network: the scheduler must not count it as a transport error
    assert not is_transport_error(results["busy"].status, results["busy"].error)
    assert results["live"].ok and results["feed"].ok
    [row] = harness.rows("SELECT last_error FROM sources WHERE name = 'busy'")
    assert "the network never went idle" in row["last_error"]


def test_wait_for_selector_reads_the_page_once_it_matches(harness: Harness) -> None:
    """With wait_for, a page that never goes idle is read as soon as the selector matches."""
    harness.extra = '[browser]\ntimeout = "5s"\n'
    body = (
        "setInterval(() => fetch('/tick'), 150);"
        "setTimeout(() => { const a = document.createElement('article');"
        " a.innerHTML = '<h1>Late headline</h1>' + '<p>Text of the article, long enough to"
        " count as an article body for the page reader, added by the script.</p>'.repeat(3);"
        " document.body.appendChild(a); }, 300);"
    )
    harness.server.serve("/late/", page(body), content_type=HTML)
    harness.server.serve("/tick", "1", content_type="text/plain")
    harness.add("late", "/late/", kind="page", fetch="browser", wait_for="article h1")
    [result] = harness.poll()
    assert result.ok, result.error
    [row] = harness.rows("SELECT content_text FROM versions")
    assert "added by the script" in row["content_text"]


def test_script_request_to_private_address_is_refused_and_recorded(harness: Harness) -> None:
    """Requests to 10.0.0.1 and the metadata address are refused; the poll succeeds and says so."""
    serve_blog(harness, 0)
    shell = SHELL.replace(
        "<script>",
        "<script>fetch('http://10.0.0.1:8080/admin').catch(() => 0);"
        "fetch('http://169.254.169.254/latest/meta-data/').catch(() => 0);",
        1,
    )
    harness.server.serve("/live/", shell, content_type=HTML)
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    [result] = harness.poll()
    assert result.ok, result.error
    [row] = harness.rows("SELECT error FROM fetches")
    assert "10.0.0.1:8080 10.0.0.1 resolves to a private or link-local address" in row["error"]
    assert "169.254.169.254:80" in row["error"]


def test_private_page_address_is_refused_before_chromium(harness: Harness) -> None:
    """A browser source at a private address fails with the same reason as a plain fetch."""
    harness.sources.append(
        {"name": "intranet", "url": "http://10.20.30.40/live", "kind": "page", "fetch": "browser"}
    )
    [result] = harness.poll()
    assert "private or link-local address; refused" in result.error


def test_source_headers_go_only_to_its_own_host(harness: Harness) -> None:
    """The token reaches the page's host (through a redirect on it), never another host."""
    port = harness.server.port
    harness.server.serve("/h/start", status=302, headers={"Location": "/h/"}, validators=False)
    body = f"fetch('http://localhost:{port}/other.json').then(r => r.text())"
    harness.server.serve("/h/", page(body), content_type=HTML)
    harness.server.serve("/other.json", "{}", content_type="application/json")
    harness.add("h", "/h/start", kind="page", fetch="browser", headers={"X-Token": "s3cret"})
    harness.poll()
    tokens = {
        r.path: r.headers.get("X-Token")
        for r in harness.server.requests
        if r.path in ("/h/start", "/h/", "/other.json")
    }
    assert tokens == {"/h/start": "s3cret", "/h/": "s3cret", "/other.json": None}


def test_windows_the_page_opens_are_blocked(harness: Harness) -> None:
    """window.open in a loop opens nothing: no request for the windows reaches the server."""
    serve_blog(harness, 0)
    shell = SHELL.replace(
        "<script>", "<script>for (let i = 0; i < 50; i++) window.open('/popup?' + i);", 1
    )
    harness.server.serve("/live/", shell, content_type=HTML)
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    [result] = harness.poll()
    assert result.ok, result.error
    assert harness.server.hits("/popup") == []


@pytest.mark.parametrize(
    ("script", "extra", "reason"),
    [
        (
            "let a = []; while (true) a.push(new Array(1e6).fill(1.5));",
            "",
            "crashed its renderer",
        ),
        (
            "let i = 0; setInterval(() => { for (let k = 0; k < 40; k++) {"
            " const d = document.createElement('div'); d.textContent = 'x'.repeat(1 << 20) + i++;"
            " document.body.appendChild(d); } }, 10);",
            'memory_limit = "300MiB"\n',
            "over [browser] memory_limit",
        ),
        ("while (true) {}", "", "did not settle within 4s"),
        (
            "fetch('/big.bin').then(r => r.arrayBuffer());",
            'max_transfer = "1MiB"\n',
            "the page loaded more than 1048576 bytes",
        ),
    ],
    ids=["js-heap", "dom-memory", "busy-loop", "transfer"],
)
def test_a_page_past_a_limit_is_stopped_and_others_go_on(
    harness: Harness, script: str, extra: str, reason: str
) -> None:
    """Each hostile page fails with its limit's reason; a good page in the same pass succeeds."""
    harness.extra = f'[browser]\ntimeout = "4s"\n{extra}'
    harness.server.serve("/bad/", page(script), content_type=HTML)
    harness.server.serve("/big.bin", b"\0" * (3 * 2**20), content_type="application/octet-stream")
    serve_blog(harness, 0)
    harness.add("bad", "/bad/", kind="page", fetch="browser")
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    results = {r.source: r for r in harness.poll()}
    assert not results["bad"].ok
    assert reason in results["bad"].error
    assert results["live"].ok, results["live"].error
    serve_blog(harness, 1)
    results = {r.source: r for r in harness.poll("live")}
    assert results["live"].ok and results["live"].counts["new"] == 1


def test_killed_chromium_is_restarted_without_touching_other_sources(
    harness: Harness, tmp_path: Path
) -> None:
    """In one long-lived pipeline, Chromium killed between passes starts again; feeds go on."""
    from aggregator.fetch import Fetcher
    from aggregator.fetch.browser import chromium_for
    from aggregator.pipeline import Pipeline
    from aggregator.sandbox import ParsePool
    from aggregator.store.thread import StoreThread

    serve_blog(harness, 0)
    harness.server.serve("/feed.xml", story.rss(0))
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    harness.add("feed", "/feed.xml")
    config = harness.config()

    async def run() -> tuple[list[bool], list[bool], int]:
        store = StoreThread(config.storage.database)
        parsers = ParsePool(config.parse)
        try:
            async with Fetcher(config.fetch) as fetcher:
                pipeline = Pipeline(config, store, fetcher, parsers)
                first = [r.ok for r in await pipeline.poll_all()]
                chromium = chromium_for(fetcher, config.browser)
                assert chromium.pid is not None
                os.killpg(chromium.pid, signal.SIGKILL)
                await asyncio.sleep(0.5)
                serve_blog(harness, 1)
                second = [r.ok for r in await pipeline.poll_all()]
                return first, second, chromium.starts
        finally:
            parsers.close()
            store.close()

    first, second, starts = asyncio.run(run())
    assert first == [True, True] and second == [True, True]
    assert starts == 2
    assert chromium_processes() == []  # closed with the fetcher


def test_hung_chromium_is_restarted(harness: Harness) -> None:
    """Chromium stopped (SIGSTOP) mid-run: that page fails on its time limit, a ping finds
    Chromium silent, it is restarted, and the next pass renders again; the feed goes on."""
    from aggregator.fetch import Fetcher
    from aggregator.fetch.browser import chromium_for
    from aggregator.pipeline import Pipeline
    from aggregator.sandbox import ParsePool
    from aggregator.store.thread import StoreThread

    harness.extra = '[browser]\ntimeout = "4s"\n'
    serve_blog(harness, 0)
    harness.server.serve("/feed.xml", story.rss(0))
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    harness.add("feed", "/feed.xml")
    config = harness.config()

    async def run() -> list[list[bool]]:
        store = StoreThread(config.storage.database)
        parsers = ParsePool(config.parse)
        passes = []
        try:
            async with Fetcher(config.fetch) as fetcher:
                pipeline = Pipeline(config, store, fetcher, parsers)
                passes.append([r.ok for r in await pipeline.poll_all()])
                chromium = chromium_for(fetcher, config.browser)
                assert chromium.pid is not None
                os.kill(chromium.pid, signal.SIGSTOP)
                passes.append([r.ok for r in await pipeline.poll_all()])
                await asyncio.sleep(7)  # the ping's 5 s, then the restart
                passes.append([r.ok for r in await pipeline.poll_all()])
                assert chromium.starts == 2
        finally:
            parsers.close()
            store.close()
        return passes

    assert asyncio.run(run()) == [[True, True], [False, True], [True, True]]
    assert chromium_processes() == []


def test_missing_chromium_is_a_config_error_naming_the_package(tmp_path: Path) -> None:
    """A browser source with no Chromium fails config check, saying what to install."""
    path = write_config(
        tmp_path / "a.toml",
        [{"url": "http://127.0.0.1:9/live", "kind": "liveblog", "fetch": "browser"}],
        db=tmp_path / "h.db",
        extra='[browser]\nexecutable = "/nonexistent/chromium"\n',
    )
    with pytest.raises(ConfigError) as caught:
        config_mod.load(path)
    assert "sources[0].fetch: needs Chromium" in str(caught.value)
    assert "apt-get install chromium" in str(caught.value)
    run = subprocess.run(
        [sys.executable, "-m", "aggregator", "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "apt-get install chromium" in run.stderr


def test_browser_only_for_pages_and_wait_for_only_with_it(tmp_path: Path) -> None:
    """fetch = "browser" on a feed, or wait_for without it, is refused with the key named."""
    for source, message in (
        ({"url": "http://127.0.0.1:9/f.xml", "fetch": "browser"}, "not kind 'feed'"),
        ({"url": "http://127.0.0.1:9/p", "kind": "page", "wait_for": "h1"}, "wait_for applies"),
        ({"url": "http://127.0.0.1:9/p", "kind": "page", "fetch": "chrome"}, "http, browser"),
    ):
        path = write_config(tmp_path / "a.toml", [source], db=tmp_path / "h.db")
        with pytest.raises(ConfigError, match=message):
            config_mod.load(path)


def test_chromium_starts_only_when_a_browser_source_exists(harness: Harness) -> None:
    """`aggregator poll` of feeds alone never starts Chromium; with a browser source it does."""
    harness.server.serve("/feed.xml", story.rss(0))
    serve_blog(harness, 0)
    harness.add("feed", "/feed.xml")

    def poll() -> str:
        harness.config()
        run = subprocess.run(
            [sys.executable, "-m", "aggregator", "poll", "--config", str(harness.config_path),
             "--log-level", "DEBUG"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stderr

    assert "chromium.started" not in poll()
    harness.add("live", "/live/", kind="liveblog", fetch="browser")
    assert "chromium.started" in poll()
