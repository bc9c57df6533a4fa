"""The daemon's delivery processes: started beside it, restarted when they die, gone with it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator.scheduler import Daemon
from tests import story
from tests.conftest import Harness
from tests.receivers import WebhookReceiver
from tests.test_notify_wake import outbox_ids, until

CHILD = "aggregator.notify.process"


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()
    yield rec
    rec.stop()


def use_webhook(harness: Harness, receiver: WebhookReceiver, processes: int) -> None:
    harness.extra = (
        f'[notify]\ncheck_every = "60s"\nretry_base = "50ms"\nprocesses = {processes}\n'
        '[schedule]\nstartup_spread = "0.05s"\nshutdown_grace = "2s"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "webhook"\nname = "hook"\nurl = "{receiver.url()}"\nconcurrency = 2\n'
    )


def delivery_children(parent: int) -> list[int]:
    """Pids of ``parent``'s children that are delivery processes."""
    found = []
    for pid in _children(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if CHILD.encode() in cmdline:
            found.append(pid)
    return found


def _children(parent: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    await until(condition, seconds)


def test_a_killed_delivery_process_is_replaced_and_nothing_is_lost(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """Two delivery processes deliver every event; one killed with SIGKILL is started again,
    the events stored meanwhile all arrive, each story in version order."""
    harness.add("world", "/feed.xml", interval="0.3s", adaptive=False)
    use_webhook(harness, receiver, processes=2)
    harness.server.serve("/feed.xml", story.rss(0))
    restarted: list[int] = []

    async def main() -> None:
        daemon = Daemon(harness.config(), handle_signals=False)
        task = asyncio.create_task(daemon.run())
        try:
            await wait_for(lambda: len(delivery_children(os.getpid())) == 2, 20)
            await wait_for(lambda: len(receiver.ids()) >= 3, 20)  # the first listing
            first = delivery_children(os.getpid())
            os.kill(first[0], signal.SIGKILL)
            for version in range(1, len(story.EPOCHS)):
                harness.server.serve("/feed.xml", story.rss(version))
                await asyncio.sleep(0.4)
            await wait_for(lambda: first[0] not in delivery_children(os.getpid()), 10)
            await wait_for(lambda: len(delivery_children(os.getpid())) == 2, 20)
            restarted.extend(p for p in delivery_children(os.getpid()) if p not in first)
            produced = outbox_ids(harness.db_path)
            await wait_for(lambda: set(produced) <= set(receiver.ids()), 20)
        finally:
            daemon.stop()
            await task

    asyncio.run(main())
    assert len(restarted) == 1
    assert not delivery_children(os.getpid())  # stopped with the daemon
    produced = outbox_ids(harness.db_path)
    assert len(produced) > 3
    assert set(receiver.ids()) == set(produced)
    order = {event_id: n for n, event_id in enumerate(produced)}
    by_entry: dict[object, list[int]] = {}
    for item in receiver.received:
        if item.status == 200:
            by_entry.setdefault(item.json["entry"]["id"], []).append(order[item.json["id"]])
    assert all(seq == sorted(seq) for seq in by_entry.values()), by_entry
    resent = Counter(receiver.ids())
    # re-sent at most: the sends in flight at the kill (concurrency 2)
    assert sum(n - 1 for n in resent.values()) <= 2


def test_processes_0_delivers_inside_the_daemon(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """With ``processes = 0`` no process is started and the daemon itself delivers."""
    harness.add("world", "/feed.xml", interval="1s", adaptive=False)
    use_webhook(harness, receiver, processes=0)
    harness.server.serve("/feed.xml", story.rss(0))
    seen: list[int] = []

    async def main() -> None:
        daemon = Daemon(harness.config(), handle_signals=False)
        task = asyncio.create_task(daemon.run())
        try:
            await wait_for(lambda: len(receiver.ids()) >= 3, 20)
            seen.extend(delivery_children(os.getpid()))
        finally:
            daemon.stop()
            await task

    asyncio.run(main())
    assert seen == []
    assert sorted(receiver.ids()) == sorted(outbox_ids(harness.db_path))


def test_the_delivery_process_ends_when_the_daemon_is_killed(
    harness: Harness, receiver: WebhookReceiver
) -> None:
    """kill -9 of ``aggregator run`` leaves no delivery process behind (its stdin ends)."""
    harness.add("world", "/feed.xml", interval="1s", adaptive=False)
    use_webhook(harness, receiver, processes=1)
    harness.server.serve("/feed.xml", story.rss(0))
    harness.config()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(harness.config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not delivery_children(daemon.pid) or len(receiver.ids()) < 3:
            assert time.monotonic() < deadline, "no delivery within 30 s"
            time.sleep(0.05)
        (child,) = delivery_children(daemon.pid)
        daemon.kill()
        daemon.wait(10)
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the delivery process outlived the daemon"
            time.sleep(0.05)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
