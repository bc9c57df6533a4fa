"""Delivery to a real webhook receiver: outages, retries, permanent refusals, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator import config as config_mod
from aggregator.notify.worker import DeliveryWorker
from aggregator.scheduler import Daemon
from aggregator.store.thread import StoreThread
from tests import story
from tests.conftest import Harness
from tests.receivers import WebhookReceiver

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="  # base64("secret-key-for-tests")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver(secret=SECRET)
    yield rec
    rec.release.set()
    rec.stop()


def use_webhook(
    harness: Harness, receiver: WebhookReceiver, extra: str = "", notify: str = ""
) -> None:
    """Point a signed webhook sink at ``receiver`` with millisecond backoff."""
    harness.extra = (
        f'[notify]\nretry_base = "10ms"\nretry_max = "50ms"\nfailing_after = 2\n{notify}\n'
        f'[[sinks]]\nkind = "webhook"\nname = "hook"\nurl = "{receiver.url()}"\n'
        f'secret_env = "TEST_WEBHOOK_SECRET"\nheaders = {{ X-Team = "news" }}\n{extra}\n'
    )
    os.environ["TEST_WEBHOOK_SECRET"] = SECRET


def outbox_ids(harness: Harness) -> list[str]:
    return [r["event_id"] for r in harness.rows("SELECT event_id FROM outbox ORDER BY id")]


def deliver(harness: Harness) -> Counter[str]:
    """One delivery pass, in process."""

    async def once() -> Counter[str]:
        store = StoreThread(harness.db_path)
        worker = DeliveryWorker(harness.config(), store)
        try:
            return await worker.run_once()
        finally:
            await worker.aclose()
            store.close()

    return asyncio.run(once())


def test_outage_over_several_polls_loses_nothing_and_keeps_order(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """Events from polls made while the receiver is down all arrive later, in order, once each."""
    harness.add("world", "/feed.xml")
    use_webhook(harness, receiver)
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()  # the sink exists from the first poll on
    receiver.stop()
    for epoch in range(1, 5):
        harness.server.serve("/feed.xml", story.rss(epoch))
        harness.poll()
    harness.server.serve("/feed.xml", "boom", status=500)
    harness.poll()
    harness.poll()  # second failure in a row: source.failing
    receiver.start()
    time.sleep(0.06)  # past the longest backoff (retry_max = 50ms)
    harness.server.serve("/feed.xml", story.rss(4))
    harness.poll()  # recovers: source.recovered, and the backlog is delivered
    produced = outbox_ids(harness)
    delivered = receiver.ids()
    figures = {
        "produced": len(produced),
        "delivered": len(set(delivered)),
        "duplicates": len(delivered) - len(set(delivered)),
        "lost": len(set(produced) - set(delivered)),
    }
    print("outage figures:", figures)
    assert delivered == produced
    assert figures == {"produced": 11, "delivered": 11, "duplicates": 0, "lost": 0}
    types = [r.json["type"] for r in receiver.received]
    assert types[-2:] == ["source.failing", "source.recovered"]
    assert all(r.signature_ok for r in receiver.received)
    assert all(r.headers["x-team"] == "news" for r in receiver.received)
    assert all(r.headers["webhook-id"] == r.json["id"] for r in receiver.received)
    pending = harness.rows("SELECT COUNT(*) AS n FROM deliveries WHERE status != 'delivered'")
    assert pending == [{"n": 0}]


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured(harness: Harness, receiver: WebhookReceiver, status: int) -> None:
    """A 503/429 with Retry-After holds the whole queue that long, then everything arrives."""
    harness.add("world", "/feed.xml")
    use_webhook(harness, receiver)
    receiver.script = [(status, {"Retry-After": "1"})]
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    assert receiver.ids() == []
    [attempt] = harness.rows("SELECT status, code FROM delivery_attempts")
    assert attempt == {"status": "retry", "code": status}
    [waiting] = harness.rows(
        "SELECT (julianday(next_attempt_at) - julianday(updated_at)) * 86400 AS wait"
        " FROM deliveries WHERE attempts = 1"
    )
    assert 0.9 <= waiting["wait"] <= 1.1
    assert deliver(harness) == Counter()  # still waiting: nothing is sent early
    time.sleep(1.05)
    assert deliver(harness)["delivered"] == 3
    assert receiver.ids() == outbox_ids(harness)


def test_server_errors_back_off_and_then_deliver(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A 500 is retried with growing backoff; attempts are logged with status and error."""
    harness.add("world", "/feed.xml")
    use_webhook(harness, receiver)
    receiver.script = [(500, {}), (500, {})]
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    time.sleep(0.02)
    deliver(harness)
    time.sleep(0.05)
    deliver(harness)
    rows = harness.rows("SELECT status, code, error FROM delivery_attempts ORDER BY id")
    assert [(r["status"], r["code"]) for r in rows[:3]] == [
        ("retry", 500),
        ("retry", 500),
        ("delivered", None),
    ]
    assert "HTTP 500" in rows[0]["error"]
    assert receiver.ids() == outbox_ids(harness)


def test_permanent_refusal_is_recorded_and_the_sink_moves_on(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A 400 marks that event failed (one attempt), later events still go; retry re-sends it."""
    harness.add("world", "/feed.xml")
    use_webhook(harness, receiver)
    receiver.script = [(400, {})]
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    produced = outbox_ids(harness)
    assert receiver.ids(400) == produced[:1]
    assert receiver.ids() == produced[1:]
    failed = harness.rows("SELECT id, status, attempts, last_error FROM deliveries WHERE id = 1")
    assert failed[0]["status"] == "failed" and failed[0]["attempts"] == 1
    assert "HTTP 400" in failed[0]["last_error"]
    cli = [sys.executable, "-m", "aggregator", "outbox", "-c", str(harness.config_path)]
    listing = subprocess.run([*cli, "list"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "failed" in listing.stdout and produced[0] in listing.stdout
    subprocess.run([*cli, "retry", "1"], cwd=ROOT, capture_output=True, check=True)
    assert deliver(harness)["delivered"] == 1
    assert receiver.ids()[-1] == produced[0]


def test_kill_between_send_and_ack_resends_the_same_event(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A delivery process killed with SIGKILL after sending re-sends that event, same id."""
    harness.add("world", "/feed.xml")
    use_webhook(harness, receiver, notify="deliver_on_poll = false")
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()  # stores three events, delivers nothing
    assert receiver.received == []
    receiver.hold.set()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "outbox", "-c", str(harness.config_path), "deliver"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert receiver.got_request.wait(20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    receiver.hold.clear()
    receiver.release.set()
    produced = outbox_ids(harness)
    assert harness.rows("SELECT status FROM deliveries ORDER BY id") == [{"status": "pending"}] * 3
    assert harness.rows("SELECT COUNT(*) AS n FROM delivery_attempts") == [{"n": 0}]
    assert deliver(harness)["delivered"] == 3
    got = [r.json["id"] for r in receiver.received]
    assert got == [produced[0], *produced]  # the first one twice, same id; nothing lost


def test_daemon_runs_the_delivery_worker(harness: Harness, receiver: WebhookReceiver) -> None:
    """`aggregator run` delivers events while it polls, and stops cleanly."""
    harness.add("world", "/feed.xml", interval="1s")
    use_webhook(harness, receiver, notify='check_every = "100ms"')
    harness.server.serve("/feed.xml", story.rss(0))

    async def main() -> None:
        daemon = Daemon(config_mod.load(harness.config_path), handle_signals=False)
        task = asyncio.create_task(daemon.run())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(receiver.ids()) == 3:
                break
        daemon.stop()
        await task

    harness.extra += '[schedule]\nstartup_spread = "0.05s"\nshutdown_grace = "2s"\n'
    harness.config()
    asyncio.run(main())
    assert receiver.ids() == outbox_ids(harness)
