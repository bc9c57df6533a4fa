"""The daemon's scheduling against the real local server, with sub-second intervals."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable

from aggregator.cli.poll import poll_once
from aggregator.scheduler import Daemon
from aggregator.timeutil import from_db, utcnow
from tests import story
from tests.conftest import Harness
from tests.server import TestServer

FAST = (
    "[notify]\nfailing_after = 3\n"
    # these tests check the adaptive policy's pace and backoff (the learned one: test_rhythm_daemon)
    '[schedule]\nstartup_spread = "0.05s"\npolicy = "adaptive"\n'
)


async def run_daemon(harness: Harness, until: Callable[[], bool], limit: float = 15) -> None:
    """Run the daemon in this event loop until ``until()`` holds (or ``limit`` s), then stop it."""
    daemon = Daemon(harness.config(), handle_signals=False)
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + limit
    while not until() and time.monotonic() < deadline and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    daemon.stop()
    await task


def gaps(server: TestServer, path: str) -> list[float]:
    times = [r.at for r in server.hits(path)]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_backoff_grows_on_errors_and_recovers_after_success(harness: Harness) -> None:
    """Failures double the wait each time; one success brings polling back to the interval."""
    harness.extra = FAST
    harness.add("flaky", "/feed.xml", interval="0.2s")
    harness.server.serve("/feed.xml", "oops", status=500, content_type="text/plain")

    def recovered_twice() -> bool:
        hits = harness.server.hits("/feed.xml")
        if len(hits) == 4:
            harness.server.serve("/feed.xml", story.rss(0))
        return len(hits) >= 7

    await run_daemon(harness, recovered_twice)
    g = gaps(harness.server, "/feed.xml")
    assert len(g) >= 6, g
    for expected, got in zip([0.2, 0.4, 0.8], g[:3], strict=True):
        assert expected * 0.95 <= got <= expected * 1.1 + 0.15, g
    assert g[3] >= 1.6 * 0.95  # the fifth attempt (a success) waited the 4th backoff
    assert all(x < 0.45 for x in g[4:6]), g  # back to the interval
    events = [r["type"] for r in harness.rows("SELECT type FROM outbox WHERE type != 'change'")]
    assert events == ["source.failing", "source.recovered"]


async def test_retry_after_is_honoured_for_that_source_only(harness: Harness) -> None:
    """A 429 with Retry-After: 2 delays that source by 2 s while another keeps its pace."""
    harness.extra = FAST
    harness.add("limited", "/limited.xml", interval="0.2s")
    harness.add("calm", "/calm.xml", interval="0.2s")
    harness.server.serve("/limited.xml", "slow down", status=429, headers={"Retry-After": "2"})
    harness.server.serve("/calm.xml", story.rss(0))
    await run_daemon(harness, lambda: len(harness.server.hits("/limited.xml")) >= 2)
    assert gaps(harness.server, "/limited.xml")[0] >= 2.0
    assert len(harness.server.hits("/calm.xml")) >= 6
    [row] = harness.rows("SELECT schedule_reason FROM sources WHERE name = 'limited'")
    assert row["schedule_reason"] == "Retry-After (HTTP 429)"


async def test_permanent_redirect_updates_the_stored_url(harness: Harness) -> None:
    """After a 301 the source is polled at its new URL and sources says where it moved from."""
    harness.extra = FAST
    harness.add("moving", "/old.xml", interval="0.2s")
    new_url = harness.server.url("/new.xml")
    harness.server.serve("/old.xml", status=301, headers={"Location": new_url})
    harness.server.serve("/new.xml", story.rss(0))
    await run_daemon(harness, lambda: len(harness.server.hits("/new.xml")) >= 3)
    assert len(harness.server.hits("/old.xml")) == 1
    [row] = harness.rows("SELECT url, config_url, moved_from FROM sources")
    assert row == {
        "url": new_url,
        "config_url": harness.server.url("/old.xml"),
        "moved_from": harness.server.url("/old.xml"),
    }


async def test_gone_source_stops_polling_and_raises_source_failing(harness: Harness) -> None:
    """A 410 is fetched once, the source is marked gone and a source.failing event is queued."""
    harness.extra = FAST
    harness.add("gone", "/gone.xml", interval="0.1s")
    harness.add("alive", "/alive.xml", interval="0.1s")
    harness.server.serve("/gone.xml", "gone", status=410)
    harness.server.serve("/alive.xml", story.rss(0))
    await run_daemon(harness, lambda: len(harness.server.hits("/alive.xml")) >= 8)
    assert len(harness.server.hits("/gone.xml")) == 1
    [row] = harness.rows("SELECT gone_at, next_check_at FROM sources WHERE name = 'gone'")
    assert row["gone_at"] is not None and row["next_check_at"] is None
    [event] = harness.rows("SELECT payload FROM outbox WHERE type = 'source.failing'")
    payload = json.loads(event["payload"])
    assert payload["source"]["name"] == "gone" and "410" in payload["error"]


async def test_own_network_outage_does_not_push_sources_into_backoff(harness: Harness) -> None:
    """Connection failures on three hosts at once count as our outage: short retries only."""
    harness.extra = FAST + 'network_retry = "0.3s"\n'
    for i, host in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.4")):
        harness.sources.append(
            {"name": f"s{i}", "url": f"http://{host}:9/feed.xml", "interval": "0.2s"}
        )
    await run_daemon(harness, lambda: False, limit=3)
    stopped = utcnow()
    rows = harness.rows("SELECT consecutive_failures, next_check_at, schedule_reason FROM sources")
    for row in rows:
        assert row["schedule_reason"].startswith("network down"), rows
        assert (from_db(row["next_check_at"]) - stopped).total_seconds() < 1.0, rows
    # without outage detection, 4+ failures would mean a backoff of >= 0.2 * 2**3 s
    assert max(r["consecutive_failures"] for r in rows) >= 4
    [daemon] = harness.rows("SELECT network FROM daemon_state")
    assert daemon["network"] == "down"


def test_per_host_and_global_caps_are_never_exceeded(harness: Harness) -> None:
    """20 slow feeds on two hosts: at most per_host in flight per host, concurrency overall."""
    servers = [TestServer("127.0.0.2").start(), TestServer("127.0.0.3").start()]
    try:
        for s_i, srv in enumerate(servers):
            for i in range(10):
                srv.serve(f"/f{i}.xml", story.rss(0), delay=0.15)
                harness.sources.append({"name": f"h{s_i}-{i}", "url": srv.url(f"/f{i}.xml")})
        harness.extra = "[fetch]\nper_host = 2\nconcurrency = 8\n"
        results = asyncio.run(poll_once(harness.config()))
        assert all(r.ok for r in results)
        assert [s.max_active for s in servers] == [2, 2]
        harness.extra = "[fetch]\nper_host = 10\nconcurrency = 3\n"
        servers[0].max_active = 0
        asyncio.run(poll_once(harness.config(), tuple(f"h0-{i}" for i in range(10))))
        assert servers[0].max_active == 3
    finally:
        for srv in servers:
            srv.stop()
