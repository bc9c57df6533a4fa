"""Live updates: one poller for all clients, pushing new changes as Server-Sent Events.

Every ``interval`` seconds one task asks ``SELECT max(id) FROM changes`` (an index
lookup). Only when it grew does it read the new changes (once, whoever is watching),
render each once, and hand it to every subscriber whose filter it passes. A client
that reconnects sends ``Last-Event-ID`` (or the page's ``after``), and first gets what
it missed, so nothing stored between the page load and the stream is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool

from aggregator.store.browse import ChangeFilter
from aggregator.store.queries import ChangeRow

log = structlog.get_logger("aggregator.web")

#: A rendered change: what a subscriber receives.
Payload = dict[str, Any]


@dataclass(eq=False)
class Subscriber:
    """One open stream: its filter, its queue, the last change id it was sent."""

    filt: ChangeFilter
    last_id: int
    queue: asyncio.Queue[Payload] = field(default_factory=lambda: asyncio.Queue(maxsize=500))


class LiveFeed:
    """The shared poller and its subscribers."""

    def __init__(
        self,
        max_id: Callable[[], int],
        after: Callable[[int], list[tuple[ChangeRow, int]]],
        render: Callable[[ChangeRow], Payload],
        interval: float = 1.0,
    ) -> None:
        self._max_id = max_id
        self._after = after
        self._render = render
        self.interval = interval
        self.subscribers: set[Subscriber] = set()
        self.last_id = 0
        self.checks = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the newest id and start polling."""
        self.last_id = await run_in_threadpool(self._max_id)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # a locked or busy database: try again next tick
                log.warning("serve.live_check_failed", error=str(exc))

    async def check(self) -> None:
        """One check: if changes were stored since the last, push them to subscribers."""
        self.checks += 1
        newest = await run_in_threadpool(self._max_id)
        if newest <= self.last_id:
            return
        if not self.subscribers:
            self.last_id = newest
            return
        while self.last_id < newest:
            batch = await run_in_threadpool(self._after, self.last_id)
            if not batch:
                break
            for row, source_id in batch:
                self._publish(row, source_id)
            self.last_id = batch[-1][0].id

    def _publish(self, row: ChangeRow, source_id: int) -> None:
        payload: Payload | None = None
        for sub in list(self.subscribers):
            if row.id <= sub.last_id or not sub.filt.matches(row, source_id):
                continue
            payload = payload or self._render(row)
            try:
                sub.queue.put_nowait(payload)
            except asyncio.QueueFull:  # a stalled client: drop it, its browser reconnects
                self.subscribers.discard(sub)

    async def stream(self, filt: ChangeFilter, after: int) -> AsyncIterator[Payload]:
        """The changes passing ``filt`` with ids above ``after``: missed ones, then live."""
        sub = Subscriber(filt, after)
        self.subscribers.add(sub)
        try:
            until = self.last_id  # newer ones reach the queue: the subscriber is in
            while after < until:  # missed ones, a page at a time (a laptop back from sleep)
                missed = await run_in_threadpool(self._after, after)
                if not missed:
                    break
                for row, source_id in missed:
                    if row.id <= until and filt.matches(row, source_id):
                        sub.last_id = row.id
                        yield self._render(row)
                after = missed[-1][0].id
            while True:
                payload = await sub.queue.get()
                if payload["id"] > sub.last_id:
                    sub.last_id = payload["id"]
                    yield payload
        finally:
            self.subscribers.discard(sub)
