"""The delivery worker: sends queued events to each sink, in order, at least once.

For each sink, ``run_once`` first queues the outbox events past the sink's
cursor that its filters accept (one transaction), then sends due deliveries
oldest first. The attempt is recorded only after the sink answered, so a
kill between send and record re-sends the same event (same id) next time:
at-least-once, never lost. A retryable failure blocks the sink's queue
until its backoff ends (per-sink order); a permanent one is recorded as
``failed`` and the sink moves on. Sinks are independent of each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from aggregator.config import Config, SinkConfig
from aggregator.events import fold_events
from aggregator.notify import Sink, make_sink
from aggregator.notify.base import DeliveryError
from aggregator.notify.filters import Filter
from aggregator.store import Store
from aggregator.store.cluster import Node
from aggregator.store.outbox import Delivery, OutboxEvent, Queued
from aggregator.store.thread import StoreThread
from aggregator.timeutil import from_db, now_db, to_db, utcnow

log = structlog.get_logger("aggregator.notify")

SEND_DEADLINE = 300.0  # seconds one send may take before it counts as a retryable failure


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits base·2ⁿ⁻¹ (capped), times 0.5-1."""

    base: float = 5.0
    cap: float = 3600.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        if retry_after is not None:
            return max(0.0, min(retry_after, 86400.0))
        ceiling = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class Route:
    """One configured sink: its filters, its sender and its row id."""

    config: SinkConfig
    sink: Sink
    filter: Filter
    sink_id: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send's outcome, and how to write it (on the store's thread)."""

    outcome: str
    event_id: str
    record: Callable[[], None]
    details: dict[str, Any]

    def log(self) -> None:
        report = log.debug if self.outcome == "delivered" else log.warning
        report("delivery." + self.outcome, event_id=self.event_id, **self.details)


class DeliveryWorker:
    """Delivers the outbox to the configured sinks."""

    def __init__(
        self,
        config: Config,
        store: StoreThread,
        *,
        backoff: Backoff | None = None,
        node: Node | None = None,
    ) -> None:
        self.store = store
        self.node = node
        self.backoff = backoff or Backoff(config.notify.retry_base, config.notify.retry_max)
        self.check_every = config.notify.check_every
        self.routes = [
            Route(c, make_sink(c.kind, c.name, c.options), Filter(c))
            for c in config.sinks
            if c.enabled
        ]
        self._synced = False
        self._task: asyncio.Task[None] | None = None

    async def sync(self) -> None:
        """Register the enabled sinks in the database (a new one starts at the newest event)."""
        pairs = [(r.config.name, r.config.kind) for r in self.routes]
        ids = await self.store.call(self.store.store.sync_sinks, pairs)
        for route in self.routes:
            route.sink_id = ids[route.config.name]
            for key, name in missing_env(route.config.options):
                log.error(
                    "sink.env_missing",
                    sink=route.config.name,
                    key=key,
                    variable=name,
                    effect="its events wait (retried) until the variable is set",
                )
        self._synced = True

    async def run_once(self) -> Counter[str]:
        """Queue new events and send everything due now; return counts of outcomes."""
        if not self._synced:
            await self.sync()
        results = await asyncio.gather(*(self._run_route(r) for r in self.routes))
        return sum(results, Counter())

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set.

        Wakes as soon as a transaction that wrote outbox events commits (the
        store's thread signals it), when the next delivery is due (a backoff,
        quiet hours, a batch window) and, at the latest, every ``check_every``
        (for events written by another process, e.g. ``aggregator poll``). A
        woken worker with nothing due sends nothing and sleeps again.
        """
        wake = asyncio.Event()
        unsubscribe = self.store.wake_on_outbox(wake)
        try:
            while not stop.is_set():
                wake.clear()  # a commit from now on wakes the next wait
                try:
                    await self.run_once()
                    wait = await self._next_wait()
                except Exception as exc:  # keep delivering after a transient database error
                    log.exception("delivery.crashed", error=str(exc))
                    wait = self.check_every
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await first_of(stop, wake)
        finally:
            unsubscribe()

    async def start(self, stop: asyncio.Event) -> DeliveryWorker:
        """Register the sinks, then run ``run(stop)`` as a background task; returns self."""
        await self.sync()
        self._task = asyncio.create_task(self.run(stop), name="delivery")
        return self

    async def stop(self, grace: float) -> None:
        """Wait up to ``grace`` s for the task (set its ``stop`` event first), then close."""
        if self._task is not None:
            _done, pending = await asyncio.wait({self._task}, timeout=grace)
            for task in pending:
                task.cancel()
        await self.aclose()

    async def aclose(self) -> None:
        """Close every sink's connections."""
        for route in self.routes:
            await route.sink.aclose()

    async def _next_wait(self) -> float:
        wait = self.check_every
        now = utcnow()
        for route in self.routes:
            wake = await self.store.call(self.store.store.wake_at, route.sink_id, to_db(now))
            if wake is not None:
                wait = min(wait, (from_db(wake) - now).total_seconds())
        return max(0.02, wait)

    async def _run_route(self, route: Route) -> Counter[str]:
        counts: Counter[str] = Counter()
        store = self.store.store
        with structlog.contextvars.bound_contextvars(sink=route.config.name):
            await self._enqueue(route)
            delivery = await self.store.call(store.next_delivery, route.sink_id, now_db())
            while delivery is not None and not _waiting(delivery):
                attempt = await self._attempt(route, delivery)
                counts[attempt.outcome] += 1
                # one trip to the store's thread per event: record it, read the next one
                delivery = await self.store.call(_record_then_next, store, attempt, route.sink_id)
                attempt.log()
        return counts

    async def _enqueue(self, route: Route) -> None:
        store = self.store.store
        while events := await self.store.call(_committed_events, store, route.sink_id):
            queued = []
            for event in events:
                payload = event.payload
                if route.filter.accepts(payload):
                    due = route.filter.due(from_db(event.created_at))
                    key = route.filter.batch_key(payload)
                    queued.append(Queued(event.id, to_db(due), key, event.created_at))
            await self.store.call(store.enqueue, route.sink_id, queued, events[-1].id)

    async def _attempt(self, route: Route, delivery: Delivery) -> Attempt:
        """Send the delivery's event(s); the attempt is written by ``_record_then_next``."""
        event = fold_events([json.loads(raw) for raw in delivery.raws])
        raw = delivery.raws[0] if len(delivery.raws) == 1 else json.dumps(event, ensure_ascii=False)
        started = time.monotonic()
        outcome, error, code, retry_at = "delivered", None, None, None
        try:
            async with asyncio.timeout(SEND_DEADLINE):
                await route.sink.send(event, raw)
        except DeliveryError as exc:
            outcome = "failed" if exc.permanent else "retry"
            error, code = str(exc), exc.status
            if not exc.permanent:
                retry_at = self._retry_at(delivery.attempts + 1, exc.retry_after)
        except Exception as exc:  # a sink's bug or a timeout: keep the event and retry
            outcome, error = "retry", f"{type(exc).__name__}: {exc}"
            retry_at = self._retry_at(delivery.attempts + 1, None)
        duration = int((time.monotonic() - started) * 1000)
        record = functools.partial(
            self.store.store.record_attempt,
            delivery.id,
            outcome,
            code=code,
            error=error,
            duration_ms=duration,
            retry_at=retry_at,
        )
        details = {k: v for k, v in (("error", error), ("retry_at", retry_at)) if v}
        return Attempt(outcome, event["id"], record, details)

    def _retry_at(self, attempts: int, retry_after: float | None) -> str:
        wait = self.backoff.delay(attempts, retry_after)
        return to_db(utcnow() + timedelta(seconds=wait))


@contextlib.asynccontextmanager
async def delivering_after(config: Config, store: StoreThread) -> AsyncIterator[None]:
    """Around one ``aggregator poll`` pass: register sinks first, deliver after.

    Registering first means a sink configured before the pass receives the
    events that pass creates. Nothing is delivered if the pass raised.
    """
    if not config.sinks:
        yield
        return
    worker = DeliveryWorker(config, store)
    try:
        await worker.sync()
        yield
        if config.notify.deliver_on_poll:
            await worker.run_once()
    finally:
        await worker.aclose()


def _committed_events(store: Store, sink_id: int) -> list[OutboxEvent]:
    """Events past the sink's cursor, none while a transaction is open on the connection.

    A transaction left open across store calls (a batch still being written)
    may hold events that are not committed yet; its commit wakes the worker again.
    """
    return [] if store.db.in_transaction else store.events_after_cursor(sink_id)


def _waiting(delivery: Delivery) -> bool:
    """Whether the delivery is waiting out a backoff."""
    return bool(delivery.next_attempt_at and delivery.next_attempt_at > now_db())


def _record_then_next(store: Store, attempt: Attempt, sink_id: int) -> Delivery | None:
    """Write the attempt; then the sink's next due delivery, unless it must wait a backoff."""
    attempt.record()
    return None if attempt.outcome == "retry" else store.next_delivery(sink_id, now_db())


async def first_of(*events: asyncio.Event) -> None:
    """Return when one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def missing_env(options: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, variable)`` for each ``*_env`` option naming an unset environment variable."""
    return [
        (key, value)
        for key, value in options.items()
        if key.endswith("_env") and isinstance(value, str) and not os.environ.get(value)
    ]
