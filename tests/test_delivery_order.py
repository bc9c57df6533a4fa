"""Delivery per story: a failing story holds back only itself; a source's first listing is its
baseline, stored but not sent; each sink's backlog is visible in status, outbox and the web."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator import config as config_mod
from aggregator.cli.common import register_plugins
from aggregator.notify.worker import DeliveryWorker
from aggregator.scheduler import Daemon
from aggregator.store.thread import StoreThread
from tests import story
from tests.conftest import Harness
from tests.receivers import WebhookReceiver

#: Every test here runs on SQLite and on a real PostgreSQL server.
BACKENDS = ("sqlite", "postgresql")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()
    yield rec
    rec.stop()


def hook(receiver: WebhookReceiver, sink: str = "", notify: str = "", name: str = "hook") -> str:
    """A webhook sink at ``receiver`` (``sink``: its extra keys) with short backoffs."""
    return (
        '[notify]\nretry_base = "200ms"\nretry_max = "200ms"\ncheck_every = "1s"\n'
        f"{notify}[[sinks]]\n"
        f'kind = "webhook"\nname = "{name}"\nurl = "{receiver.url()}"\n{sink}\n'
    )


def deliver(harness: Harness) -> None:
    async def once() -> None:
        register_plugins()
        store = StoreThread(harness.db_path)
        worker = DeliveryWorker(config_mod.load(harness.config_path), store)
        try:
            await worker.run_once()
        finally:
            await worker.aclose()
            store.close()

    asyncio.run(once())


def events(harness: Harness) -> list[dict[str, object]]:
    """Every outbox event, oldest first, with its entry and baseline flag."""
    return harness.rows(
        "SELECT event_id, entry_id, baseline, created_at FROM outbox WHERE type = 'change'"
        " ORDER BY id"
    )


def test_a_failing_story_holds_back_only_its_own_later_events(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """The talks story is refused for a while: its two events wait, in version order, while
    the other stories' events go at once; then both arrive, v1's change before v2's."""
    harness.add("world", "/feed.xml")
    harness.extra = hook(receiver, "send_first_listing = true\n", "deliver_on_poll = false\n")
    talks: list[bool] = []
    receiver.refuse = lambda e: e.get("entry", {}).get("key") == "talks" and not talks
    for epoch in range(3):
        harness.server.serve("/feed.xml", story.rss(epoch))
        harness.poll()
    deliver(harness)
    stored = events(harness)
    talks_entry = harness.rows("SELECT id FROM entries WHERE key = 'talks'")[0]["id"]
    theirs = [e["event_id"] for e in stored if e["entry_id"] == talks_entry]
    others = [e["event_id"] for e in stored if e["entry_id"] != talks_entry]
    assert len(theirs) >= 2 and others
    assert set(receiver.ids()) == set(others)  # every other story went, talks waits
    assert set(receiver.ids(503)) == {theirs[0]}  # only its first event was tried
    talks.append(True)  # the receiver takes it now
    time.sleep(0.25)  # past the backoff
    deliver(harness)
    arrived = [i for i in receiver.ids() if i in theirs]
    assert arrived == theirs  # version order
    assert sorted(receiver.ids()) == sorted(e["event_id"] for e in stored)


def test_the_first_listing_is_stored_but_not_sent(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A new source's first poll is its baseline: in the history and search, flagged, not
    sent; the next poll's changes are; a sink that asks gets the baseline too."""
    harness.add("world", "/feed.xml")
    harness.extra = hook(receiver)
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    first = events(harness)
    assert first and all(e["baseline"] == 1 for e in first)
    assert receiver.received == []
    assert {r["baseline"] for r in harness.rows("SELECT baseline FROM changes")} == {1}
    searched = subprocess.run(
        [sys.executable, "-m", "aggregator", "search", "antalya", "--db", str(harness.db_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert searched.returncode == 0 and "talks" in searched.stdout  # the history has it
    harness.server.serve("/feed.xml", story.rss(1))
    harness.poll()
    later = [e["event_id"] for e in events(harness) if e["baseline"] == 0]
    assert later and sorted(receiver.ids()) == sorted(later)

    receiver.received.clear()
    harness.extra = hook(receiver, "send_first_listing = true\n", name="all")
    harness.add("other", "/other.xml")
    harness.server.serve("/other.xml", story.rss(0).replace("talks", "other-talks"))
    harness.poll()
    got = [r.json for r in receiver.received]
    assert got and all(e.get("baseline") is True for e in got)


def test_a_source_emptied_and_refilled_is_not_first_again(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """An empty first listing is the baseline too; what the source lists later is news."""
    harness.add("world", "/feed.xml")
    harness.extra = hook(receiver)
    empty = '<?xml version="1.0"?><rss version="2.0"><channel><title>w</title></channel></rss>'
    harness.server.serve("/feed.xml", empty)
    harness.poll()
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    assert len(receiver.ids()) == len(events(harness)) >= 3


def test_a_source_added_to_a_running_daemon_starts_quietly(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A source a reload adds: its first listing is stored and not sent."""
    harness.add("world", "/feed.xml", interval="1s")
    harness.extra = hook(receiver) + '[schedule]\nstartup_spread = "0.05s"\n'
    harness.server.serve("/feed.xml", story.rss(0))
    harness.server.serve("/new.xml", story.rss(1))

    async def main() -> None:
        register_plugins()
        daemon = Daemon(harness.config(), handle_signals=False)
        task = asyncio.create_task(daemon.run())
        for _ in range(200):
            await asyncio.sleep(0.05)
            if harness.server.hits("/feed.xml"):
                break
        harness.add("new", "/new.xml", interval="1s")
        harness.config()
        await daemon.reload()
        for _ in range(200):
            await asyncio.sleep(0.05)
            if harness.server.hits("/new.xml"):
                break
        await asyncio.sleep(1.0)
        daemon.stop()
        await task

    asyncio.run(main())
    rows = harness.rows(
        "SELECT s.name, o.baseline FROM outbox o JOIN sources s ON s.id = o.source_id"
        " WHERE o.type = 'change'"
    )
    assert {r["name"] for r in rows} == {"world", "new"}
    assert all(r["baseline"] == 1 for r in rows)
    assert receiver.received == []


def test_status_outbox_and_the_web_view_show_a_sink_falling_behind(
    harness: Harness,
) -> None:
    """A sink whose receiver is away: status and outbox show its backlog, the web view's
    sources page marks it falling behind once its oldest event has waited a minute."""
    from tests.webrig import start_serve, stop_serve

    harness.add("world", "/feed.xml")
    harness.extra = (
        '[notify]\ndeliver_on_poll = false\n[[sinks]]\nkind = "webhook"\nname = "hook"\n'
        'url = "http://127.0.0.1:9/down"\nsend_first_listing = true\n'
    )
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    deliver(harness)  # refused: connection refused at port 9
    harness.execute("UPDATE outbox SET created_at = '2020-01-01 00:00:00.000'")
    run = [sys.executable, "-m", "aggregator"]
    db = ["--db", str(harness.db_path)]
    status = subprocess.run([*run, "status", *db], capture_output=True, text=True, cwd=ROOT)
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith("sink hook"))
    assert "3 pending" in line and "oldest waiting" in line and "events/s" in line
    outbox = subprocess.run(
        [*run, "outbox", "--config", str(harness.config_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert "3 pending" in outbox.stdout and "oldest waiting" in outbox.stdout, outbox.stdout
    proc, url = start_serve(["--db", str(harness.db_path), "--port", "0"], harness.tmp / "e")
    try:
        import httpx

        page = httpx.get(f"{url}/sources", timeout=10).text
    finally:
        stop_serve(proc)
    assert "falling behind" in page and "hook" in page  # in words, not only a colour
