"""The daemon's learned schedule against the real local server, with sub-second intervals."""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from email.utils import formatdate

from aggregator.pipeline import source_specs
from aggregator.rhythm_sync import RhythmSync
from aggregator.scheduler import Daemon, bounds_for
from aggregator.store.thread import StoreThread
from tests import story
from tests.conftest import Harness

BACKENDS = ("sqlite", "postgresql")
BOUNDS = {"interval": "0.5s", "min_interval": "0.1s", "max_interval": "2s"}


def feed(count: int) -> str:
    """An RSS feed with ``count`` items, the newest dated now."""
    now = time.time()
    items = "".join(
        f"<item><title>Post {i}</title><guid>post-{i}</guid>"
        f"<pubDate>{formatdate(now - (count - 1 - i) * 0.2, usegmt=True)}</pubDate></item>"
        for i in range(count)
    )
    head = '<?xml version="1.0"?><rss version="2.0"><channel><title>Busy</title>'
    return f"{head}{items}</channel></rss>"


def posting(harness: Harness, path: str, every: float, stop: threading.Event) -> threading.Thread:
    """Serve ``path`` with one more item every ``every`` seconds until ``stop``."""

    def run() -> None:
        for count in itertools.count(1):
            harness.server.serve(path, feed(count))
            if stop.wait(every):
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def gaps(harness: Harness, path: str) -> list[float]:
    times = [r.at for r in harness.server.hits(path)]
    return [b - a for a, b in itertools.pairwise(times)]


def status_text(harness: Harness) -> str:
    """What ``aggregator status`` prints for the harness's config."""
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "status", "--config", str(harness.config_path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip


async def run_for(daemon: Daemon, seconds: float, until: Callable[[], bool] = lambda: True) -> None:
    """Run ``daemon`` for ``seconds``, then on until ``until()`` holds (at most 20 s more)."""
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(seconds)
    deadline = time.monotonic() + 20
    while not until() and time.monotonic() < deadline and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    daemon.stop()
    await task


async def test_a_changing_source_is_polled_more_often_than_a_still_one(harness: Harness) -> None:
    """Same interval, one source posting every 0.2 s, one never: the learned schedule polls
    the first far more often, never sooner than min_interval nor later than max_interval,
    says why in the sources table, and refreshes its rhythms from the database."""
    harness.extra = '[schedule]\nstartup_spread = "0.05s"\n'
    harness.add("busy", "/busy.xml", **BOUNDS)
    harness.add("still", "/still.xml", **BOUNDS)
    harness.server.serve("/still.xml", story.rss(0))
    stop = threading.Event()
    poster = posting(harness, "/busy.xml", 0.2, stop)
    daemon = Daemon(harness.config(), handle_signals=False)
    try:
        await run_for(daemon, 12.5, lambda: daemon.rhythm.book.folded_upto is not None)
    finally:
        stop.set()
        poster.join()
    busy, still = harness.server.hits("/busy.xml"), harness.server.hits("/still.xml")
    assert len(busy) >= 2 * len(still), (len(busy), len(still))
    assert min(gaps(harness, "/busy.xml")) >= 0.1 * 0.95
    assert max(gaps(harness, "/still.xml")[1:]) <= 2.0 * 1.1 + 0.3
    rows = {
        r["name"]: r["schedule_reason"]
        for r in harness.rows("SELECT name, schedule_reason FROM sources")
    }
    assert rows["busy"].startswith("learned: ")
    assert rows["still"].startswith("learned: ")
    status = await asyncio.to_thread(status_text, harness)
    line = next(x for x in status.splitlines() if x.strip().startswith("busy:"))
    assert re.search(r"next check (in \S+|due now) \(learned: [\d.]+/day", line), line
    book = daemon.rhythm.book
    assert daemon.rhythm.watermark is not None  # loaded, then refreshed from the database
    assert book.scale is not None and book.folded_upto is not None
    assert book.rhythms["busy"].rate(book.prior("busy")) > book.rhythms["still"].rate(
        book.prior("still")
    )


async def test_another_node_learns_the_same_rhythms_from_the_database(harness: Harness) -> None:
    """A node that never polled a source rates it from the history another node wrote."""
    harness.extra = '[schedule]\nstartup_spread = "0.05s"\n'
    harness.add("busy", "/busy.xml", **BOUNDS)
    harness.add("still", "/still.xml", **BOUNDS)
    harness.server.serve("/still.xml", story.rss(0))
    stop = threading.Event()
    poster = posting(harness, "/busy.xml", 0.2, stop)
    config = harness.config()
    try:
        await run_for(Daemon(config, handle_signals=False), 8.0)
    finally:
        stop.set()
        poster.join()
    store = StoreThread(config.storage.database)
    try:
        ids = await store.call(store.store.sync_sources, source_specs(config))
        other = RhythmSync()
        other.sources({s.name: (ids[s.name], bounds_for(s, config)) for s in config.sources})
        await other.ready(store)
        await other.loaded()
    finally:
        store.close()
    book = other.book
    busy, still = book.rhythms["busy"], book.rhythms["still"]
    assert busy.news >= 10  # the posts the first node saw, read back from changes
    assert busy.visits >= 5  # its visits, from fetches (those older than the refresh lag)
    assert busy.rate(book.prior("busy")) > 20 * still.rate(book.prior("still"))
