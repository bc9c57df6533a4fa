"""Delivery in processes of their own, beside the daemon.

A Python process runs one thread at a time: in one process, a breaking story's
polls, diffs and writes and its hundreds of sends a second take turns, and the
sends fall behind by tens of seconds. So the daemon starts ``[notify]
processes`` delivery processes (1 by default; 0 delivers inside the daemon).
Each runs a ``DeliveryWorker`` on its own database connection; they share the
work through the same claims and leases as several nodes do, so per-story
order, at-least-once and "nothing lost on kill -9" hold unchanged.

The daemon writes one byte to a process's stdin after each commit that stored
events (the wake-up); the worker also looks every ``check_every``. The first
line on stdin is the config (JSON, without the sources). End of stdin (the
daemon stopped or died) or SIGTERM: the process finishes the sends in flight and
exits. A process that exits on its own is started again (1 s, doubling to a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import structlog

from aggregator.config import Config
from aggregator.notify.worker import DeliveryWorker
from aggregator.store.thread import StoreThread

log = structlog.get_logger("aggregator.notify")

#: Seconds the first restart of an exited process waits (doubles, up to ``RESTART_MAX``).
RESTART_FIRST = 1.0
RESTART_MAX = 60.0
#: A process that ran this long before exiting restarts after ``RESTART_FIRST`` again.
RESTART_RESET = 60.0
#: Seconds the daemon waits at start for each process to say it is ready to send.
READY_WAIT = 30.0


class DeliveryProcesses:
    """The daemon's side: starts, wakes, restarts and stops the delivery processes."""

    def __init__(self, config: Config, store: StoreThread, count: int) -> None:
        self.config = config
        self.store = store
        self.count = count
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._lock = threading.Lock()  # the store's thread wakes while slots change
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None

    async def start(self, stop: asyncio.Event) -> DeliveryProcesses:
        """Register the sinks, then start the processes; they run until ``stop``."""
        worker = DeliveryWorker(self.config, self.store)
        try:
            await worker.sync()  # before any process starts: no two register at once
        finally:
            await worker.aclose()
        self._unsubscribe = self.store.on_outbox_commit(self.wake)
        ready = [asyncio.get_running_loop().create_future() for _ in range(self.count)]
        self._tasks = [
            asyncio.create_task(
                self._keep(slot, stop, ready[slot]), name=f"delivery-process-{slot}"
            )
            for slot in range(self.count)
        ]
        # the daemon says it started once events it stores are sent at once
        _done, late = await asyncio.wait(ready, timeout=READY_WAIT)
        if late:
            log.warning("delivery.process_slow", waited_s=READY_WAIT, processes=len(late))
        return self

    def wake(self) -> None:
        """Tell every process that events were stored (runs on the store's thread)."""
        with self._lock:
            for proc in self.procs:
                if proc is not None and proc.stdin is not None:
                    with contextlib.suppress(OSError):  # full (a wake is pending) or gone
                        os.write(proc.stdin.fileno(), b".")

    async def stop(self, grace: float) -> None:
        """End of stdin for each process; wait up to ``grace`` s (and 5 more), then kill."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with self._lock:
            procs = [p for p in self.procs if p is not None]
            for proc in procs:
                _close_stdin(proc)
        await asyncio.gather(*(asyncio.to_thread(_end, p, grace + 5.0) for p in procs))

    async def _keep(self, slot: int, stop: asyncio.Event, ready: asyncio.Future[None]) -> None:
        """Run the slot's process until ``stop``, starting it again when it exits.

        ``ready`` is done once the first process said it is ready (or exited).
        """
        delay = RESTART_FIRST
        while not stop.is_set():
            started = time.monotonic()
            proc, said_ready = self._spawn()
            said_ready.add_done_callback(functools.partial(_settle, ready))
            with self._lock:
                self.procs[slot] = proc
            while proc.poll() is None and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
            if stop.is_set():
                return
            with self._lock:
                _close_stdin(proc)
                self.procs[slot] = None
            if time.monotonic() - started > RESTART_RESET:
                delay = RESTART_FIRST
            log.error("delivery.process_exited", code=proc.returncode, restart_in=delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, RESTART_MAX)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], asyncio.Future[None]]:
        """Start a process; the future is done when it says it is ready, or exits."""
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator.notify.process"],
                stdin=subprocess.PIPE,
                pass_fds=(write_end,),
            )
        finally:
            os.close(write_end)
        assert proc.stdin is not None
        header = {
            "config": self.config.model_copy(update={"sources": []}).model_dump(mode="json"),
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "ready_fd": write_end,
        }
        proc.stdin.write(json.dumps(header).encode() + b"\n")
        proc.stdin.flush()
        os.set_blocking(proc.stdin.fileno(), False)  # a wake never blocks the store's thread
        log.debug("delivery.process_started", pid=proc.pid)
        return proc, _said_ready(read_end)


def _settle(future: asyncio.Future[None], _: object = None) -> None:
    """Mark ``future`` done unless it already is (a later process's ready counts no more)."""
    if not future.done():
        future.set_result(None)


def _said_ready(fd: int) -> asyncio.Future[None]:
    """A future done when a byte (ready) or end of file (exited) arrives on ``fd``."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        _settle(future)

    loop.add_reader(fd, readable)
    return future


def _close_stdin(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _end(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``proc`` to exit; kill it after ``timeout`` s."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("delivery.process_killed", pid=proc.pid, after_s=timeout)
        proc.kill()
        proc.wait()


# --- the delivery process itself -------------------------------------------------------


def main() -> None:
    """``python -m aggregator.notify.process``: deliver until stdin ends or SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the daemon, which ends stdin
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    line = _read_line(0)
    if not line:
        return  # the daemon went away before it said anything
    header = json.loads(line)
    from aggregator import log as logging_setup

    logging_setup.configure(level=header["log_level"])
    asyncio.run(follow(Config.model_validate(header["config"]), header.get("ready_fd")))


def _read_line(fd: int) -> bytes:
    """Bytes up to the first newline on ``fd`` (what follows it is only wake-ups)."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0]


async def follow(config: Config, ready_fd: int | None = None) -> None:
    """Deliver until stdin ends or SIGTERM; sends in flight finish first.

    Once the sinks are registered and the loops run, a byte on ``ready_fd`` tells
    the daemon so.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    store = StoreThread(config.storage.database, failing_after=config.notify.failing_after)
    worker = DeliveryWorker(config, store, role="delivery")

    def readable() -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        if data:
            worker.wake()
        else:
            loop.remove_reader(0)
            stop.set()

    os.set_blocking(0, False)
    loop.add_reader(0, readable)
    try:
        await worker.start(stop)
        if ready_fd is not None:
            with contextlib.suppress(OSError):  # the daemon stopped waiting
                os.write(ready_fd, b"r")
            os.close(ready_fd)
        await stop.wait()
        await worker.stop(config.schedule.shutdown_grace)
    finally:
        store.close()


if __name__ == "__main__":
    main()
