"""Run every database call on one dedicated thread.

sqlite3 connections belong to the thread that made them, and SQLite has one
writer at a time anyway: the async daemon hands each write (and the parsing
that feeds it) to this thread and awaits the result.

Outbox signal: a temporary trigger on this thread's connection notes every row
inserted into ``outbox``, whichever code inserted it (a poll, a source event,
a followed article, a digest, or several of them batched in one transaction).
After each call, once no transaction is open on the connection (the rows are
committed, so any reader sees them), the thread calls the listeners added with
``on_outbox_commit``: the delivery worker wakes on them instead of a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from aggregator.store import Store

T = TypeVar("T")

log = structlog.get_logger("aggregator.store")

#: Calls ``aggregator_outbox_written()`` (this connection's Python function) per new row;
#: a TEMP trigger lives in this connection only and is not part of the database file.
OUTBOX_TRIGGER = (
    "CREATE TEMP TRIGGER IF NOT EXISTS aggregator_outbox_written AFTER INSERT ON outbox"
    " BEGIN SELECT aggregator_outbox_written(); END"
)


class StoreThread:
    """A ``Store`` living on its own thread."""

    def __init__(self, path: str | Path, *, failing_after: int = 3) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._written = False  # outbox rows inserted since the last signal (store thread only)
        self._listeners: tuple[Callable[[], None], ...] = ()
        self.store: Store = self._pool.submit(self._open, path, failing_after).result()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn, args)

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
        store = Store.open(path, failing_after=failing_after)
        store.db.conn.create_function("aggregator_outbox_written", 0, self._note_written)
        store.db.execute(OUTBOX_TRIGGER)
        return store

    def _note_written(self) -> None:
        self._written = True

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        finally:
            if self._written and not self.store.db.conn.in_transaction:
                self._written = False  # a rolled-back insert also signals: a harmless wake
                self._signal()

    def _signal(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception as exc:  # one listener's bug must not fail the store call
                log.exception("store.listener_failed", error=str(exc))
