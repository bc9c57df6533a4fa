"""The daemon's housekeeping: scheduled digests reach their sink, the fetch log is pruned."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from aggregator import config as config_mod
from aggregator import housekeeping
from aggregator.notify.worker import DeliveryWorker
from aggregator.scheduler import Daemon
from aggregator.store.thread import StoreThread
from tests import story
from tests.conftest import Harness


def sinks_and_digest(harness: Harness) -> None:
    desk, other = harness.tmp / "desk.jsonl", harness.tmp / "other.jsonl"
    harness.extra = (
        f'[[sinks]]\nsend_first_listing = true\nkind = "jsonl"\nname = "desk"\npath = "{desk}"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "other"\npath = "{other}"\nkinds = ["removed"]\n'
        '[[digests]]\nname = "morning"\nsink = "desk"\nschedule = "0 7 * * *"\nsince = "1h"\n'
    )


def test_scheduled_digest_is_delivered_to_its_sink_only(harness: Harness) -> None:
    """The daemon's digest job enqueues the digest; only the sink it names receives it."""
    harness.add("world", "/feed.xml")
    sinks_and_digest(harness)
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()

    async def main() -> None:
        daemon = Daemon(config_mod.load(harness.config_path), handle_signals=False)
        daemon.store = StoreThread(harness.db_path)
        try:
            daemon.schedule_digests()
            [job] = [j for j in daemon.scheduler.get_jobs() if j.id == "digest:morning"]
            assert (
                str(job.trigger)
                == "cron[month='*', day='*', day_of_week='*', hour='7', minute='0']"
            )
            await job.func(*job.args)
            await DeliveryWorker(daemon.config, daemon.store).run_once()
        finally:
            daemon.store.close()

    asyncio.run(main())
    desk = [json.loads(line) for line in (harness.tmp / "desk.jsonl").read_text().splitlines()]
    assert [e["type"] for e in desk] == ["change", "change", "change", "digest"]
    assert desk[-1]["sink"] == "desk" and story.TALKS.title in desk[-1]["text"]
    other = harness.tmp / "other.jsonl"
    assert not other.exists() or "digest" not in other.read_text()


def test_daemon_prunes_old_fetch_rows_but_keeps_referenced_ones(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreferenced fetch rows older than keep_fetches go; rows a version points at stay."""
    monkeypatch.setattr(housekeeping, "RETENTION_FIRST", 0.05)
    harness.add("world", "/feed.xml", interval="1h")
    harness.extra = '[schedule]\nstartup_spread = "1h"\n'
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    harness.poll()  # a 304: an unreferenced fetch row
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("UPDATE fetches SET started_at = '2020-01-01 00:00:00.000'")
    config = config_mod.load(harness.config_path)

    async def main() -> None:
        daemon = Daemon(config, handle_signals=False)
        task = asyncio.create_task(daemon.run())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(harness.rows("SELECT id FROM fetches")) == 1:
                break
        daemon.stop()
        await task

    asyncio.run(main())
    [kept] = harness.rows("SELECT outcome FROM fetches")
    assert kept["outcome"] == "changed"  # the fetch that brought the versions
