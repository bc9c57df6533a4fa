"""Run every database call on one dedicated thread.

sqlite3 connections belong to the thread that made them, and SQLite has one
writer at a time anyway: the async daemon hands each write (and the parsing
that feeds it) to this thread and awaits the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aggregator.store import Store

T = TypeVar("T")


class StoreThread:
    """A ``Store`` living on its own thread."""

    def __init__(self, path: str | Path, *, failing_after: int = 3) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self.store: Store = self._pool.submit(
            Store.open, path, failing_after=failing_after
        ).result()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread and wait (from synchronous code)."""
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        """Close the connection on its own thread and stop the thread."""
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)
