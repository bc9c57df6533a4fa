"""Run every database call on one dedicated thread.

sqlite3 connections belong to the thread that made them, and SQLite has one
writer at a time anyway: the async daemon hands each database call to this
thread and awaits the result. Polls' writes go through ``write``, which commits
the writes that queued while the thread was busy together (group commit): one
transaction, one commit and one full-text index flush for many polls.

Outbox signal: every row inserted into ``outbox`` goes through
``rows.insert_outbox``, which notes it on the connection (whichever code
inserted it: a poll, a source event, a followed article, a digest, or several
of them batched in one transaction). After each call, once no transaction is
open on the connection (the rows are committed, so any reader sees them), the
thread calls the listeners added with ``on_outbox_commit``: the delivery worker
wakes on them instead of a timer. On PostgreSQL the same insert also sends
``NOTIFY aggregator_outbox``, which wakes the other nodes' workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from aggregator.store import Store
from aggregator.store.db import ConnectionLost

T = TypeVar("T")

log = structlog.get_logger("aggregator.store")

#: Most writes committed together by ``StoreThread.write``.
MAX_GROUP = 64

#: Seconds before the first reconnection attempt after the server went away, and at most
#: between two (the wait doubles).
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0


@dataclass(frozen=True, slots=True)
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: asyncio.Future[Any]


def _settle(done: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if done.cancelled():
        return
    ok, value = outcome
    if ok:
        done.set_result(value)
    else:
        done.set_exception(value)


class StoreThread:
    """A ``Store`` living on its own thread."""

    def __init__(self, path: str | Path, *, failing_after: int = 3) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._listeners: tuple[Callable[[], None], ...] = ()
        self._queue: list[_Write] = []  # writes waiting for the next group (under _lock)
        self._writing = False  # a group is queued or running on the thread (under _lock)
        self._lock = threading.Lock()
        #: Where the database is, as given (a PostgreSQL URL with its password, if any).
        self.url = str(path)
        #: When the connection was lost (monotonic), while it is; outages so far (seconds).
        self.lost_since: float | None = None
        self.outages: list[float] = []
        self._retry_in = RECONNECT_FIRST
        self._next_try = 0.0
        self.store: Store = self._pool.submit(self._open, path, failing_after).result()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn, args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread, committed with the writes queued meanwhile.

        Group commit: while the thread is busy, writes queue; its next turn runs up
        to ``MAX_GROUP`` of them in one transaction, each in its own savepoint (a
        write that raises is rolled back alone and raises here), with one commit.
        An idle thread takes a write at once, so a lone write waits for nothing.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queue.append(_Write(fn, args, done))
            start, self._writing = not self._writing, True
        if start:
            self._pool.submit(self._run, self._write_group, (loop,))
        return await done

    def _write_group(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        outcomes = self._apply(group)
        for write, outcome in zip(group, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, write.done, outcome)
        with self._lock:
            if self._queue:  # a fresh turn, so calls queued meanwhile run in between
                self._pool.submit(self._run, self._write_group, (loop,))
            else:
                self._writing = False

    def _apply(self, group: list[_Write]) -> list[tuple[bool, Any]]:
        """Run ``group`` in one transaction; (ok, result or exception) per write."""
        self._ensure_connected()
        db = self.store.db
        outcomes: list[tuple[bool, Any]] = []
        try:
            with db.atomic():
                for write in group:
                    try:
                        with db.atomic():  # a savepoint
                            outcomes.append((True, write.fn(*write.args)))
                    except Exception as exc:
                        outcomes.append((False, exc))
        except Exception as exc:  # the commit failed: nothing of the group is stored
            outcomes = [(False, exc)] * len(group)
        lost = [exc for ok, exc in outcomes if not ok and isinstance(exc, ConnectionLost)]
        if lost:
            self._lost(lost[0])
        elif not all(ok for ok, _ in outcomes):
            self.store.load_fetch_states()  # the cache may hold what was rolled back
        return outcomes

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread and wait (from synchronous code)."""
        return self._pool.submit(self._run, fn, args).result()

    def close(self) -> None:
        """Close the connection on its own thread and stop the thread."""
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)

    def on_outbox_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each commit that inserted outbox rows.

        It runs on the store's thread, so it must be quick and thread-safe.
        Returns a function that removes it.
        """
        self._listeners = (*self._listeners, listener)

        def remove() -> None:
            self._listeners = tuple(f for f in self._listeners if f is not listener)

        return remove

    def wake_on_outbox(self, event: asyncio.Event) -> Callable[[], None]:
        """Set ``event`` (in the running loop) after each commit that inserted outbox rows.

        Returns a function that stops it.
        """
        loop = asyncio.get_running_loop()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(event.set)

        return self.on_outbox_commit(wake)

    def _open(self, path: str | Path, failing_after: int) -> Store:
        return Store.open(path, failing_after=failing_after)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._ensure_connected()
        try:
            return fn(*args)
        except ConnectionLost as exc:
            self._lost(exc)
            raise
        finally:
            db = self.store.db
            if db.outbox_written and not db.in_transaction:
                db.outbox_written = False
                self._signal()

    # -- a database server that goes away (PostgreSQL) ----------------------

    def _lost(self, exc: Exception) -> None:
        """Note that the connection is gone; the next calls try to reconnect, with backoff."""
        if self.lost_since is None:
            self.lost_since = time.monotonic()
            self._retry_in = RECONNECT_FIRST
            self._next_try = self.lost_since
            log.warning("database.lost", error=str(exc), retrying="with backoff")

    def _ensure_connected(self) -> None:
        """Reconnect if the connection was lost and the backoff allows a try now.

        Raises:
            ConnectionLost: still unreachable (the caller's work waits for the next try).
        """
        if self.lost_since is None:
            return
        now = time.monotonic()
        if now < self._next_try:
            raise ConnectionLost(self._down_text(now))
        try:
            self.store.reconnect()
        except Exception as exc:
            self._next_try = now + self._retry_in
            self._retry_in = min(self._retry_in * 2, RECONNECT_MAX)
            raise ConnectionLost(f"{self._down_text(now)}: {exc}") from None
        down = round(now - self.lost_since, 1)
        self.lost_since = None
        self.outages.append(down)
        log.info("database.reconnected", after_seconds=down)
        with contextlib.suppress(Exception):
            self.store.load_fetch_states()

    def _down_text(self, now: float) -> str:
        since = int(now - (self.lost_since or now))
        return f"the database has been unreachable for {since} s (reconnecting)"

    def _signal(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception as exc:  # one listener's bug must not fail the store call
                log.exception("store.listener_failed", error=str(exc))
