"""A daemon with WebSub push against the test hub: the rig the WebSub tests share.

``Rig`` writes the config (one source, "news", whose feed on the test server names
the hub; a webhook sink; the callback endpoint on a free loopback port). ``Running``
runs the real daemon in the test's event loop. Calls into the hub block, so tests make
them through ``hub_call`` (a thread) while the daemon answers.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aggregator.config import Config
from aggregator.scheduler import Daemon
from tests.conftest import Harness
from tests.hub import Hub
from tests.receivers import WebhookReceiver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def feed(
    hub: str, topic: str, items: int, *, title: str = "Newsroom", only: list[int] | None = None
) -> bytes:
    """An RSS feed naming ``hub`` and ``topic`` (atom:link): items ``items`` down to 1, or
    those in ``only``."""
    entries = "".join(
        f"<item><guid isPermaLink='false'>item-{n}</guid><title>Item {n}</title>"
        f"<description>Report number {n} of the day.</description></item>"
        for n in (only if only is not None else range(items, 0, -1))
    )
    return (
        "<?xml version='1.0'?><rss version='2.0' xmlns:atom='http://www.w3.org/2005/Atom'>"
        f"<channel><title>{title}</title><link>https://news.example/</link>"
        f"<atom:link rel='hub' href='{hub}'/><atom:link rel='self' href='{topic}'/>"
        f"{entries}</channel></rss>"
    ).encode()


class Rig:
    """A harness with one pushed source ("news"), the hub, and a webhook sink."""

    def __init__(self, harness: Harness, hub: Hub, receiver: WebhookReceiver) -> None:
        self.harness, self.hub, self.receiver = harness, hub, receiver
        self.port = free_port()
        #: Where this node's endpoint listens (another node's differs from ``port``).
        self.listen_port = self.port
        self.topic = harness.server.url("/feed.xml")
        self.items = 3
        self.websub = ""
        self.interval = "1s"
        self.push = "auto"
        self.with_callback = True

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
            {
                "name": "news", "url": self.topic, "interval": self.interval, "adaptive": False,
                "push": self.push,
            }
        ]  # fmt: skip
        callback = f'callback = "{self.callback}"\n' if self.with_callback else ""
        self.harness.extra = (
            f'[websub]\n{callback}listen = "127.0.0.1:{self.listen_port}"\n'
            f'retry = "1s"\nverify_timeout = "2s"\n{self.websub}\n'
            '[schedule]\nstartup_spread = "0.05s"\nshutdown_grace = "2s"\n'
            '[notify]\ncheck_every = "60s"\n'
            "[[sinks]]\n"
            f'kind = "webhook"\nname = "hook"\nurl = "{self.receiver.url()}"\n'
        )
        self.harness.config()  # written (a running daemon reads it on reload)

    def row(self) -> dict[str, Any]:
        [row] = self.harness.rows("SELECT * FROM websub")
        return row

    def feed_hits(self) -> int:
        return len(self.harness.server.hits("/feed.xml"))

    def pushed(self) -> list[dict[str, Any]]:
        return self.harness.rows("SELECT * FROM fetches WHERE via = 'push' ORDER BY id")


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

    def __init__(self, rig: Rig, config: Config | None = None) -> None:
        self.rig = rig
        self.daemon = Daemon(config or rig.harness.config(), handle_signals=False)

    async def __aenter__(self) -> Daemon:
        self.task = asyncio.create_task(self.daemon.run())
        await until(lambda: self.daemon.claimer is not None or self.task.done())
        if self.task.done():
            self.task.result()  # raise what stopped it
        return self.daemon

    async def __aexit__(self, *exc: object) -> None:
        self.daemon.stop()
        await self.task


async def subscribed(rig: Rig) -> None:
    """Wait until the hub holds a verified subscription of the source."""
    await until(lambda: bool(rig.hub.subscribers(rig.topic)))
    await until(lambda: rig.row()["state"] == "active")
