"""The delivery worker wakes when events are committed, not on its ``check_every`` timer.

Every test sets ``check_every = "60s"``, so the timer cannot be what delivers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator.notify.worker import DeliveryWorker
from aggregator.scheduler import Daemon
from aggregator.store import FetchRecord, SourceSpec, Store
from aggregator.store.outbox import SINK_DOWN_AFTER
from aggregator.store.queries import enqueue_digest
from aggregator.store.thread import StoreThread
from aggregator.timeutil import from_db, now_db
from tests import story
from tests.conftest import Harness
from tests.receivers import WebhookReceiver


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()
    yield rec
    rec.stop()


def use_webhook(harness: Harness, receiver: WebhookReceiver, notify: str = "") -> None:
    harness.extra = (
        f'[notify]\ncheck_every = "60s"\n{notify}\n'
        f'[schedule]\nstartup_spread = "0.05s"\nshutdown_grace = "2s"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "webhook"\nname = "hook"\nurl = "{receiver.url()}"\n'
    )


def outbox_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM outbox ORDER BY id")]
    finally:
        conn.close()


def sink_retry_and_wake(store: Store, sink_id: int) -> tuple[str | None, str | None]:
    """When the sink (down as a whole) may be tried again, and its ``wake_at``, read together."""
    retry_at = store.db.value("SELECT retry_at FROM sinks WHERE id = ?", [sink_id])
    return retry_at, store.wake_at(sink_id)


async def until(condition: Callable[[], bool], seconds: float) -> None:
    """Return once ``condition()`` holds (checked every 5 ms); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s")
        await asyncio.sleep(0.005)


def test_daemon_delivers_a_stored_change_at_once(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A change the daemon stores reaches the webhook well within 2 s (check_every is 60 s)."""
    harness.add("world", "/feed.xml", interval="1s", adaptive=False)
    use_webhook(harness, receiver)
    harness.server.serve("/feed.xml", story.rss(0))
    latencies: list[float] = []

    async def main() -> None:
        daemon = Daemon(harness.config(), handle_signals=False)
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: len(receiver.ids()) == 3, 10)  # the first poll's events
            harness.server.serve("/feed.xml", story.rss(1))
            await until(lambda: len(outbox_ids(harness.db_path)) > 3, 10)
            stored = time.monotonic()  # at most 5 ms after the commit
            produced = outbox_ids(harness.db_path)
            await until(lambda: len(receiver.ids()) >= len(produced), 2)
            latencies.append(time.monotonic() - stored)
        finally:
            daemon.stop()
            await task

    asyncio.run(main())
    print(f"stored (seen by another connection) -> webhook: {1000 * latencies[0]:.0f} ms")
    assert sorted(receiver.ids()) == sorted(outbox_ids(harness.db_path))  # stories side by side
    assert len(receiver.ids()) > 3


def test_a_failing_sink_is_retried_on_its_backoff_not_on_every_wake(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """Commits every 40 ms wake the worker, but a sink that refuses everything is backed off
    as a whole: after a few refusals, one attempt per backoff, not one per commit or event."""
    use_webhook(harness, receiver, notify='retry_base = "400ms"\nretry_max = "400ms"')
    config = harness.config()  # each retry waits 0.2-0.4 s
    receiver.default_status = 503
    store = StoreThread(harness.db_path)

    async def main() -> None:
        stop = asyncio.Event()
        worker = await DeliveryWorker(config, store).start(stop)
        try:
            for n in range(50):  # 2 s of commits, each one waking the worker
                await store.call(store.store.add_event, {"id": f"e{n}", "type": "digest"})
                await asyncio.sleep(0.04)
            assert all(r.status == 503 for r in receiver.received)
            # the worker sleeps until the sink may be tried again, not until the backlog's
            # (past) due times
            sink_id = worker.routes[0].sink_id
            retry_at, wake = await store.call(sink_retry_and_wake, store.store, sink_id)
            assert retry_at is not None and wake == retry_at
            receiver.default_status = 200
            await until(lambda: len(receiver.ids()) >= 50, 10)
        finally:
            stop.set()
            await worker.stop(2)

    try:
        asyncio.run(main())
        attempts = store.run(
            lambda: store.store.db.execute(
                "SELECT delivery_id, at, status FROM delivery_attempts ORDER BY id"
            ).fetchall()
        )
    finally:
        store.close()
    retries = [a for a in attempts if a[2] == "retry"]
    probes = retries[SINK_DOWN_AFTER:]  # once the sink is down, one probe at a time
    gaps = [(from_db(b[1]) - from_db(a[1])).total_seconds() for a, b in itertools.pairwise(probes)]
    print(f"{len(retries)} attempts refused in 2 s of commits, probe gaps {min(gaps):.3f} s and up")
    assert 5 <= len(retries) <= SINK_DOWN_AFTER + 12  # then 2 s / (0.2-0.4 s); not 50+
    assert min(gaps) >= 0.15 and sorted(gaps)[len(gaps) // 2] >= 0.19
    assert sorted(receiver.ids()) == sorted(f"e{n}" for n in range(50))
    assert len(receiver.ids()) == 50  # each once


def test_store_thread_signals_after_commits_that_wrote_outbox_rows(tmp_path: Path) -> None:
    """Each path that inserts outbox rows signals once, after its commit, never before."""
    db = tmp_path / "history.db"
    store = StoreThread(db, failing_after=2)
    seen: list[int] = []  # outbox rows another connection sees when signalled

    def visible() -> None:
        conn = sqlite3.connect(db)
        try:
            seen.append(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            conn.close()

    def two_in_one_transaction(s: Store) -> None:
        with s.db.atomic():
            s.add_event({"id": "b1", "type": "digest"})
            s.add_event({"id": "b2", "type": "digest"})
            assert seen == [1]  # not yet: the outer transaction has not committed

    def open_transaction(s: Store) -> None:
        s.db.execute("BEGIN")
        s.add_event({"id": "c1", "type": "digest"})

    store.on_outbox_commit(visible)
    try:
        [source_id] = store.run(
            store.store.sync_sources, [SourceSpec("s", "feed", "http://127.0.0.1:9/", 60)]
        ).values()
        failed = FetchRecord("http://127.0.0.1:9/", now_db(), "error", error="refused")
        store.run(store.store.record_fetch, source_id, failed)
        assert seen == []  # no event yet
        store.run(store.store.record_fetch, source_id, failed)  # source.failing
        assert seen == [1]
        store.run(two_in_one_transaction, store.store)
        assert seen == [1, 3]
        store.run(open_transaction, store.store)  # a batch left open across calls
        assert seen == [1, 3]
        store.run(store.store.db.execute, "COMMIT")
        assert seen == [1, 3, 4]
        store.run(enqueue_digest, store.store.db, {"id": "d1", "type": "digest"})
        store.run(enqueue_digest, store.store.db, {"id": "d1", "type": "digest"})  # no row
        store.run(store.store.sync_sinks, [("hook", "webhook")])
        assert seen == [1, 3, 4, 5]
    finally:
        store.close()


def test_a_batch_open_across_calls_is_sent_after_its_commit(harness: Harness) -> None:
    """Events of a transaction still open are not sent; its COMMIT wakes the worker."""
    out = harness.tmp / "events.jsonl"
    harness.extra = (
        '[notify]\ncheck_every = "60s"\n[[sinks]]\nsend_first_listing = true\n'
        f'kind = "jsonl"\nname = "file"\npath = "{out}"\n'
    )
    config = harness.config()
    store = StoreThread(harness.db_path)

    def open_batch(s: Store) -> None:
        s.db.execute("BEGIN")
        s.add_event({"id": "b1", "type": "digest"})
        s.add_event({"id": "b2", "type": "digest"})

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    async def main() -> None:
        stop = asyncio.Event()
        worker = await DeliveryWorker(config, store).start(stop)
        try:
            await store.call(open_batch, store.store)
            assert await worker.run_once() == Counter()  # e.g. a timer's pass: nothing sent
            assert lines() == []
            await store.call(store.store.db.execute, "COMMIT")
            await until(lambda: len(lines()) == 2, 2)
        finally:
            stop.set()
            await worker.stop(2)

    try:
        asyncio.run(main())
    finally:
        store.close()
    assert [json.loads(line)["id"] for line in lines()] == ["b1", "b2"]
