"""WebSub push end to end: the daemon against a hub written to the spec (tests/hub.py).

Each test runs the real daemon in the test's event loop, with its callback endpoint on
a loopback port; the feed is served by the local test server and names the hub. Calls
into the hub block, so they run in a thread (``hub_call``) while the daemon answers.
Every test runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aggregator.scheduler import Daemon
from aggregator.timeutil import from_db, utcnow
from tests.conftest import Harness
from tests.hub import Hub
from tests.receivers import WebhookReceiver

BACKENDS = ("sqlite", "postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def feed(hub: str, topic: str, items: int, *, title: str = "Newsroom") -> bytes:
    """An RSS feed naming ``hub`` and ``topic`` (atom:link), its newest ``items`` items."""
    entries = "".join(
        f"<item><guid isPermaLink='false'>item-{n}</guid><title>Item {n}</title>"
        f"<description>Report number {n} of the day.</description></item>"
        for n in range(items, 0, -1)
    )
    return (
        "<?xml version='1.0'?><rss version='2.0' xmlns:atom='http://www.w3.org/2005/Atom'>"
        f"<channel><title>{title}</title><link>https://news.example/</link>"
        f"<atom:link rel='hub' href='{hub}'/><atom:link rel='self' href='{topic}'/>"
        f"{entries}</channel></rss>"
    ).encode()


@pytest.fixture(name="hub")
def _hub() -> Iterator[Hub]:
    hub = Hub()
    yield hub
    hub.stop()


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()
    yield rec
    rec.stop()


class Rig:
    """A harness with one pushed source ("news"), the hub, and a webhook sink."""

    def __init__(self, harness: Harness, hub: Hub, receiver: WebhookReceiver) -> None:
        self.harness, self.hub, self.receiver = harness, hub, receiver
        self.port = free_port()
        self.topic = harness.server.url("/feed.xml")
        self.items = 3
        self.websub = ""
        self.interval = "1s"

    @property
    def callback(self) -> str:
        return f"http://127.0.0.1:{self.port}/websub"

    def publish_locally(self) -> bytes:
        """Put the next version of the feed on the test server; return its body."""
        body = feed(self.hub.url, self.topic, self.items)
        self.harness.server.serve("/feed.xml", body)
        return body

    def write(self) -> None:
        self.harness.sources = [
            {"name": "news", "url": self.topic, "interval": self.interval, "adaptive": False}
        ]
        self.harness.extra = (
            f'[websub]\ncallback = "{self.callback}"\nlisten = "127.0.0.1:{self.port}"\n'
            f'retry = "1s"\nverify_timeout = "2s"\n{self.websub}\n'
            '[schedule]\nstartup_spread = "0.05s"\nshutdown_grace = "2s"\n'
            '[notify]\ncheck_every = "60s"\n'
            "[[sinks]]\n"
            f'kind = "webhook"\nname = "hook"\nurl = "{self.receiver.url()}"\n'
        )

    def row(self) -> dict[str, Any]:
        [row] = self.harness.rows("SELECT * FROM websub")
        return row

    def feed_hits(self) -> int:
        return len(self.harness.server.hits("/feed.xml"))

    def pushed(self) -> list[dict[str, Any]]:
        return self.harness.rows("SELECT * FROM fetches WHERE via = 'push' ORDER BY id")


@pytest.fixture(name="rig")
def _rig(harness: Harness, hub: Hub, receiver: WebhookReceiver) -> Rig:
    rig = Rig(harness, hub, receiver)
    rig.publish_locally()
    rig.write()
    return rig


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Return once ``condition()`` holds (checked every 10 ms); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s")
        await asyncio.sleep(0.01)


async def hub_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking hub call in a thread, so the daemon in this loop can answer it."""
    return await asyncio.to_thread(fn, *args, **kwargs)


class Running:
    """The daemon running in this event loop, started by ``async with``."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.daemon = Daemon(rig.harness.config(), handle_signals=False)

    async def __aenter__(self) -> Daemon:
        self.task = asyncio.create_task(self.daemon.run())
        return self.daemon

    async def __aexit__(self, *exc: object) -> None:
        self.daemon.stop()
        await self.task


async def subscribed(rig: Rig) -> None:
    """Wait until the hub holds a verified subscription of the source."""
    await until(lambda: bool(rig.hub.subscribers(rig.topic)))
    await until(lambda: rig.row()["state"] == "active")


async def test_subscribes_with_a_secret_and_answers_the_verification(rig: Rig) -> None:
    """The first poll finds the hub; the daemon asks it with a fresh secret and an
    unguessable callback, echoes the hub's challenge, and the source waits for the
    safety poll."""
    async with Running(rig):
        await subscribed(rig)
        [request] = rig.hub.requests
        [verification] = rig.hub.verifications
    assert request["hub.mode"] == "subscribe" and request["hub.topic"] == rig.topic
    token = request["hub.callback"].removeprefix(rig.callback + "/")
    assert len(token) >= 40 and "/" not in token
    assert len(request["hub.secret"]) == 64 and int(request["hub.secret"], 16)
    assert verification.echoed and verification.status == 200
    row = rig.row()
    assert row["secret"] == request["hub.secret"] and row["token"] == token
    assert row["lease_seconds"] == rig.hub.lease_seconds
    [source] = rig.harness.rows("SELECT next_check_at FROM sources")
    wait = (from_db(source["next_check_at"]) - utcnow()).total_seconds()
    assert 3000 < wait <= 3600  # the safety poll, 1 h by default
    assert rig.feed_hits() == 1


async def test_a_signed_delivery_is_stored_and_sent_within_a_second(rig: Rig) -> None:
    """A change the hub pushes is stored (its fetches row says push) and reaches the
    webhook sink within 1 s, with no poll of the feed in between."""
    async with Running(rig):
        await subscribed(rig)
        await until(lambda: len(rig.receiver.received) == 0 or True)
        polls = rig.feed_hits()
        rig.items = 4
        body = rig.publish_locally()
        [delivery] = await hub_call(rig.hub.publish, rig.topic, body)
        assert delivery.status == 202
        await until(lambda: len(rig.receiver.received) >= 1, 1.0)
        sent = time.time() - delivery.sent_at
        [fetch] = rig.pushed()
        assert rig.feed_hits() == polls
    assert sent < 1.0
    assert fetch["outcome"] == "changed" and fetch["changes"] == 1
    [event] = [r.json for r in rig.receiver.received]
    assert event["type"] == "change" and event["kind"] == "new"
