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
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "webhook"\nname = "hook"\nurl = "{receiver.url()}"\n'
        f'secret_env = "TEST_WEBHOOK_SECRET"\nheaders = {{ X-Team = "news" }}\n{extra}\n'
    )
    os.environ["TEST_WEBHOOK_SECRET"] = SECRET


def outbox_ids(harness: Harness) -> list[str]:
    return [r["event_id"] for r in harness.rows("SELECT event_id FROM outbox ORDER BY id")]


def stories(harness: Harness) -> dict[str, str]:
    """Each event's story: its entry, else its source, else itself."""
    rows = harness.rows("SELECT event_id, entry_id, source_id FROM outbox")
    return {
        r["event_id"]: f"e{r['entry_id']}" if r["entry_id"] else f"s{r['source_id']}" for r in rows
    }


def by_story(harness: Harness, ids: list[str]) -> dict[str, list[str]]:
    """``ids`` grouped by story, each group in the order given."""
    story_of = stories(harness)
    grouped: dict[str, list[str]] = {}
    for event_id in ids:
        grouped.setdefault(story_of[event_id], []).append(event_id)
    return grouped


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
    """Events from polls made while the receiver is down all arrive later, once each, every
    story's events in version order."""
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
    assert by_story(harness, delivered) == by_story(harness, produced)
    assert figures == {"produced": 11, "delivered": 11, "duplicates": 0, "lost": 0}
    types = [r.json["type"] for r in receiver.received if r.json["type"] != "change"]
    assert types == ["source.failing", "source.recovered"]
    assert all(r.signature_ok for r in receiver.received)
    assert all(r.headers["x-team"] == "news" for r in receiver.received)
    assert all(r.headers["webhook-id"] == r.json["id"] for r in receiver.received)
    pending = harness.rows("SELECT COUNT(*) AS n FROM deliveries WHERE status != 'delivered'")
    assert pending == [{"n": 0}]


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured(harness: Harness, receiver: WebhookReceiver, status: int) -> None:
    """A 503/429 with Retry-After holds that event's story that long; the others go now."""
    harness.add("world", "/feed.xml")
    use_webhook(harness, receiver, extra="concurrency = 1")
    receiver.script = [(status, {"Retry-After": "1"})]
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    produced = outbox_ids(harness)
    refused = receiver.ids(status)
    assert len(refused) == 1 and sorted(receiver.ids() + refused) == sorted(produced)
    attempts = harness.rows("SELECT status, code FROM delivery_attempts ORDER BY id")
    assert attempts[0] == {"status": "retry", "code": status}
    assert [a["status"] for a in attempts[1:]] == ["delivered", "delivered"]
    [waiting] = harness.rows(
        "SELECT (julianday(next_attempt_at) - julianday(updated_at)) * 86400 AS wait"
        " FROM deliveries WHERE status = 'pending'"
    )
    assert 0.9 <= waiting["wait"] <= 1.1
    assert deliver(harness) == Counter()  # still waiting: nothing is sent early
    time.sleep(1.05)
    assert deliver(harness)["delivered"] == 1
    assert receiver.ids()[-1] == refused[0] and sorted(receiver.ids()) == sorted(produced)


def test_server_errors_back_off_and_then_deliver(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A 500 is retried with growing backoff; attempts are logged with status and error."""
    harness.add("world", "/feed.xml")
    use_webhook(harness, receiver, extra="concurrency = 1")
    receiver.script = [(500, {}), (500, {})]
    harness.server.serve("/feed.xml", story.rss(0))
    harness.poll()
    for _ in range(3):
        time.sleep(0.06)  # past the longest backoff (retry_max = 50ms)
        deliver(harness)
    rows = harness.rows(
        "SELECT delivery_id, status, code, error FROM delivery_attempts ORDER BY id"
    )
    retried = [r for r in rows if r["status"] == "retry"]
    assert [r["code"] for r in retried] == [500, 500] and "HTTP 500" in retried[0]["error"]
    for delivery_id in {r["delivery_id"] for r in retried}:  # each retried event got through
        assert [r["status"] for r in rows if r["delivery_id"] == delivery_id][-1] == "delivered"
    assert sorted(receiver.ids()) == sorted(outbox_ids(harness))


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
    [refused] = receiver.ids(400)
    assert sorted(receiver.ids()) == sorted(set(produced) - {refused})
    [failed] = harness.rows(
        "SELECT d.id, d.status, d.attempts, d.last_error FROM deliveries d"
        " JOIN outbox o ON o.id = d.outbox_id WHERE o.event_id = ?",
        (refused,),
    )
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert "HTTP 400" in failed["last_error"]
    cli = [sys.executable, "-m", "aggregator", "outbox", "-c", str(harness.config_path)]
    listing = subprocess.run([*cli, "list"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "failed" in listing.stdout and refused in listing.stdout
    retry = [*cli, "retry", str(failed["id"])]
    subprocess.run(retry, cwd=ROOT, capture_output=True, check=True)
    assert deliver(harness)["delivered"] == 1
    assert receiver.ids()[-1] == refused


def test_kill_between_send_and_ack_resends_the_same_event(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """A delivery process killed with SIGKILL after sending re-sends those events, same ids."""
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
    time.sleep(0.3)  # the other sends reach the receiver too (several in flight)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    receiver.hold.clear()
    receiver.release.set()
    time.sleep(0.2)  # the held requests are answered (to a dead client) and recorded
    held = [r.json["id"] for r in receiver.received]
    produced = outbox_ids(harness)
    assert harness.rows("SELECT status FROM deliveries ORDER BY id") == [{"status": "pending"}] * 3
    assert harness.rows("SELECT COUNT(*) AS n FROM delivery_attempts") == [{"n": 0}]
    assert deliver(harness)["delivered"] == 3
    got = [r.json["id"] for r in receiver.received]
    assert held and set(held) <= set(produced)
    assert sorted(got) == sorted(held + produced)  # the ones in flight twice, same ids
    print("kill figures:", {"produced": 3, "resent": len(held), "lost": 0})


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
    assert sorted(receiver.ids()) == sorted(outbox_ids(harness))
