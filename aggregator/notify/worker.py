"""The delivery worker: sends queued events to each sink, several at once, at least once.

Each sink has a loop of its own. It queues the outbox events past the sink's
cursor that its filters accept (``Store.enqueue_new``), then keeps up to the
sink's ``concurrency`` deliveries in flight: it claims the heads of their
stories (``Store.claim_deliveries``: version order per story, a lease per
delivery, shared with any other node) and sends each in its own task. The
attempt is recorded only after the sink answered, so a kill between send and
record re-sends the same event (same id) once its lease lapses: at least once,
never lost. A retryable failure holds back only its story, until its backoff
ends; a permanent one is recorded as ``failed`` and the story moves on. A sink
down as a whole is backed off as a whole. Sinks are independent of each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from aggregator.config import Config, SinkConfig
from aggregator.errors import StoreError
from aggregator.events import fold_events
from aggregator.notify import Sink, make_sink
from aggregator.notify.base import DeliveryError
from aggregator.notify.filters import Filter
from aggregator.store import Store
from aggregator.store.cluster import Node, release_dead
from aggregator.store.db import ConnectionLost
from aggregator.store.listen import outbox_commits
from aggregator.store.outbox import IN_ORDER, Delivery, OutboxEvent, Queued
from aggregator.store.thread import StoreThread
from aggregator.timeutil import from_db, to_db, utcnow

log = structlog.get_logger("aggregator.notify")

SEND_DEADLINE = 120.0  # seconds one send may take before it counts as a retryable failure
#: How long a claimed delivery stays leased to its node (longer than any send).
LEASE = SEND_DEADLINE + 30.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits base·2ⁿ⁻¹ (capped), times 0.5-1."""

    base: float = 2.0
    cap: float = 3600.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        if retry_after is not None:
            return max(0.0, min(retry_after, 86400.0))
        ceiling = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class Route:
    """One configured sink: its filters, its sender, its row id and its sends in flight."""

    config: SinkConfig
    sink: Sink
    filter: Filter
    sink_id: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sending: set[asyncio.Task[str]] = field(default_factory=set)
    #: Set when a commit wrote outbox events (the cursor has something to read).
    fresh: asyncio.Event = field(default_factory=asyncio.Event)
    #: Outcomes of this route's sends so far (``delivered``, ``retry``, ``failed``, ...).
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Sends that claimed their successor themselves (their end need not wake the loop).
    handed_on: set[asyncio.Task[str]] = field(default_factory=set)
    failures: int = 0  # failed attempts in a row, as this node saw them

    @property
    def concurrency(self) -> int:
        """Deliveries in flight at once (the sink's setting, else its kind's default)."""
        return self.config.concurrency or self.sink.concurrency

    def decide(self, event: OutboxEvent) -> Queued | None:
        """Whether (and when, in which story) the sink gets ``event``."""
        if event.baseline and not self.config.send_first_listing:
            return None  # a source's first listing: stored, not announced
        payload = event.payload
        if not self.filter.accepts(payload):
            return None
        due = self.filter.due(from_db(event.created_at))
        story = IN_ORDER if self.sink.in_order else event.story
        key = self.filter.batch_key(payload)
        return Queued(event.id, to_db(due), key, event.created_at, story)


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
        role: str = "once",
    ) -> None:
        self.store = store
        self.backoff = backoff or Backoff(config.notify.retry_base, config.notify.retry_max)
        self.check_every = config.notify.check_every
        #: Who holds this worker's leases: its node, else ``host:pid:role``.
        self.node_id = node.id if node else f"{socket.gethostname()}:{os.getpid()}:{role}"
        self.routes = [
            Route(c, make_sink(c.kind, c.name, c.options), Filter(c))
            for c in config.sinks
            if c.enabled
        ]
        self._synced = False
        self._task: asyncio.Task[None] | None = None

    async def sync(self, *, retire: bool = True) -> None:
        """Register the enabled sinks in the database (a new one starts at the newest event)."""
        pairs = [(r.config.name, r.config.kind) for r in self.routes]
        ids = await self.store.call(
            functools.partial(self.store.store.sync_sinks, pairs, retire=retire)
        )
        # sends a killed process of this host had in hand are due again now
        host = self.node_id.split(":", 1)[0]
        await self.store.call(release_dead, self.store.store.db, host)
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
        results = await asyncio.gather(*(self._drain_route(r) for r in self.routes))
        return sum(results, Counter())

    async def _drain_route(self, route: Route) -> Counter[str]:
        """Send what is due now, ``concurrency`` at a time, until nothing is left to claim."""
        before = Counter(route.outcomes)
        with structlog.contextvars.bound_contextvars(sink=route.config.name):
            await self._enqueue(route)
            while await self._fill(route) or route.sending:
                if route.sending:
                    await asyncio.wait(route.sending, return_when=asyncio.FIRST_COMPLETED)
        return route.outcomes - before

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set: one loop per sink.

        A sink's loop wakes as soon as a transaction that wrote outbox events
        commits (the store's thread signals it; on PostgreSQL other nodes' commits
        too, through ``LISTEN``), when a send finishes, when its next delivery is due
        (a backoff, quiet hours, a batch window) and, at the latest, every
        ``check_every``. A woken loop with nothing due sends nothing and sleeps again.
        """
        unsubscribe = self.store.on_outbox_commit(self._wake_all(asyncio.get_running_loop()))
        listener = None
        if self.store.store.db.is_postgres:
            listener = asyncio.create_task(self._listen(stop), name="delivery-listen")
        try:
            await asyncio.gather(*(self._route_loop(r, stop) for r in self.routes))
        finally:
            unsubscribe()
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    def wake(self) -> None:
        """Events were stored: every sink's loop reads past its cursor now (loop thread)."""
        for route in self.routes:
            _new_events(route)

    def _wake_all(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        def wake() -> None:
            for route in self.routes:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(_new_events, route)

        return wake

    async def _route_loop(self, route: Route, stop: asyncio.Event) -> None:
        with structlog.contextvars.bound_contextvars(sink=route.config.name):
            looked = 0.0  # when the loop last read past the cursor
            while not stop.is_set():
                route.wake.clear()  # a commit from now on wakes the next wait
                try:
                    now = time.monotonic()
                    if route.fresh.is_set() or now - looked >= self.check_every:
                        route.fresh.clear()  # events committed from now on: read again
                        looked = now
                        await self._enqueue(route)
                    await self._fill(route)
                    wait = await self._next_wait(route)
                except ConnectionLost:  # database.lost was logged: try again soon
                    wait = 1.0
                except Exception as exc:  # keep delivering after a transient database error
                    log.exception("delivery.crashed", error=str(exc))
                    wait = self.check_every
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await first_of(stop, route.wake)
            await self._finish(route)

    async def _finish(self, route: Route) -> None:
        """Let the sends in flight end (their attempts are recorded); cancel the rest."""
        if not route.sending:
            return
        _done, pending = await asyncio.wait(route.sending, timeout=SEND_DEADLINE)
        for task in pending:
            task.cancel()

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
            if pending:
                await asyncio.wait(pending, timeout=5)
        with contextlib.suppress(Exception):  # leases of cut-short sends: due again now
            await self.store.call(self.store.store.release_deliveries, self.node_id)
        await self.aclose()

    async def aclose(self) -> None:
        """Close every sink's connections."""
        for route in self.routes:
            await route.sink.aclose()

    async def _next_wait(self, route: Route) -> float:
        if route.sending:
            return self.check_every  # a finished send wakes the loop (and it claims again)
        now = utcnow()
        wake = await self.store.call(
            functools.partial(self.store.store.wake_at, concurrency=route.concurrency),
            route.sink_id,
            to_db(now),
        )
        wait = self.check_every
        if wake is not None:
            wait = min(wait, (from_db(wake) - now).total_seconds())
        return max(0.005, wait)

    async def _enqueue(self, route: Route) -> None:
        store = self.store.store
        while await self.store.call(_committed_enqueue, store, route.sink_id, route.decide):
            pass

    async def _fill(self, route: Route) -> list[asyncio.Task[str]]:
        """Claim deliveries for the free slots of the route and start sending them."""
        room = route.concurrency - len(route.sending)
        if room <= 0:
            return []
        claimed = await self.store.call(self._claim, route, room)
        return self._start(route, claimed)

    def _claim(self, route: Route, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` of the route's next deliveries (on the store's thread)."""
        return self.store.store.claim_deliveries(
            route.sink_id, self.node_id, concurrency=route.concurrency, lease=LEASE, limit=limit
        )

    def _start(self, route: Route, claimed: list[Delivery]) -> list[asyncio.Task[str]]:
        started = []
        for delivery in claimed:
            task = asyncio.create_task(self._send(route, delivery))
            route.sending.add(task)
            task.add_done_callback(functools.partial(_sent, route))
            started.append(task)
        return started

    async def _send(self, route: Route, delivery: Delivery) -> str:
        """Send, record the attempt and, in the same store call, claim the next delivery."""
        attempt = await self._attempt(route, delivery)
        try:
            following = await self.store.write(self._settle, route, attempt)
        except StoreError as exc:  # at least once: it is sent again when its lease lapses
            log.warning(
                "delivery.unrecorded", event_id=attempt.event_id, outcome=attempt.outcome,
                error=str(exc), effect="sent again once its lease lapses",
            )  # fmt: skip
            route.outcomes["unrecorded"] += 1
            return "unrecorded"
        attempt.log()
        route.outcomes[attempt.outcome] += 1
        if following:
            route.handed_on.add(asyncio.current_task())  # type: ignore[arg-type]
            self._start(route, following)
        return attempt.outcome

    def _settle(self, route: Route, attempt: Attempt) -> list[Delivery]:
        """Record ``attempt`` and claim one delivery to take its slot (one transaction).

        Writes go through the store's group commit, so a busy sink's records and claims
        share transactions with each other and with the polls' writes.
        """
        attempt.record()
        return [] if attempt.outcome == "retry" else self._claim(route, 1)

    async def _attempt(self, route: Route, delivery: Delivery) -> Attempt:
        """Send the delivery's event(s); the attempt is written by ``Attempt.record``."""
        event = fold_events([json.loads(raw) for raw in delivery.raws])
        raw = delivery.raws[0] if len(delivery.raws) == 1 else json.dumps(event, ensure_ascii=False)
        started = time.monotonic()
        outcome, error, code, retry_at, sink_retry_at = "delivered", None, None, None, None
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
        route.failures = route.failures + 1 if outcome == "retry" else 0
        if outcome == "retry":  # if the sink is down as a whole, when to try it again
            sink_retry_at = self._retry_at(route.failures, None)
        duration = int((time.monotonic() - started) * 1000)
        record = functools.partial(
            self.store.store.record_attempt,
            delivery.id,
            outcome,
            code=code,
            error=error,
            duration_ms=duration,
            retry_at=retry_at,
            sink_retry_at=sink_retry_at,
        )
        details = {k: v for k, v in (("error", error), ("retry_at", retry_at)) if v}
        return Attempt(outcome, event["id"], record, details)

    def _retry_at(self, attempts: int, retry_after: float | None) -> str:
        wait = self.backoff.delay(attempts, retry_after)
        return to_db(utcnow() + timedelta(seconds=wait))

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake the loops when another node commits outbox events (PostgreSQL ``LISTEN``)."""
        delay = 1.0
        while not stop.is_set():
            try:
                async for _commit in outbox_commits(self.store.url):
                    delay = 1.0
                    self.wake()
            except Exception as exc:  # the server went away: listen again later
                log.debug("delivery.listen_lost", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


def _new_events(route: Route) -> None:
    """Outbox events were committed: the route reads past its cursor on its next turn."""
    route.fresh.set()
    route.wake.set()


def _sent(route: Route, task: asyncio.Task[str]) -> None:
    route.sending.discard(task)
    if task in route.handed_on:  # the send claimed its successor itself
        route.handed_on.discard(task)
        return
    route.wake.set()  # a slot is free: the loop claims the next delivery


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


def _committed_enqueue(
    store: Store, sink_id: int, decide: Callable[[OutboxEvent], Queued | None]
) -> int:
    """Queue events past the sink's cursor, none while a transaction is open on the connection.

    A transaction left open across store calls (a batch still being written)
    may hold events that are not committed yet; its commit wakes the worker again.
    """
    return 0 if store.db.in_transaction else store.enqueue_new(sink_id, decide)


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
