"""The daemon: polls each source when it is due, politely, until SIGTERM.

The database is the schedule. Every source's next check is
``sources.next_check_at``; a claim loop takes the sources that are due, as
many as the pipeline has room for (``store.cluster.claim_due``: one node per
source, the per-host cap held across nodes), and starts their checks. Each
check plans its own next one from ``aggregator.schedule_policy``, using the
store's cached fetch state (no database round trip); the plan goes to
``sources.next_check_at`` with the store's next batched write (at the latest
before the next claim), which also ends the claim. The loop sleeps until the
earliest due time it knows of (its own plans, the database's) or, on
PostgreSQL, ``OTHERS_EVERY`` at most, to see what other nodes planned or let go.
Checks are never skipped for being late.

Several nodes (PostgreSQL): each is a row in ``nodes`` with a heartbeat;
claims carry a lease in ``next_check_at``, so a node that dies leaves its
sources due again when the lease lapses. On SQLite one daemon runs at a time
(``NodeLock``). APScheduler runs the cron jobs (scheduled digests).

Signals: SIGTERM/SIGINT stop claiming, give in-flight polls
``[schedule] shutdown_grace`` seconds, cancel the rest, give back what this node
holds and close the database. SIGHUP re-reads the config: added sources start,
removed ones stop (their history stays), changed timings apply; a bad config is
logged and ignored. Under systemd the daemon speaks sd_notify (READY, STATUS,
WATCHDOG, STOPPING).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregator import config as config_mod
from aggregator import schedule_policy as policy
from aggregator import sdnotify
from aggregator.config import Config, SourceConfig
from aggregator.errors import ConfigError, StoreError
from aggregator.fetch import Fetcher
from aggregator.housekeeping import Housekeeping
from aggregator.notify.process import DeliveryProcesses
from aggregator.notify.worker import DeliveryWorker
from aggregator.pipeline import Pipeline, PollResult
from aggregator.rhythm_sync import RhythmSync, ended
from aggregator.sandbox import ParsePool
from aggregator.store import cluster, is_postgres, scheduling
from aggregator.store.cluster import Claimed, ClaimRound, Node, NodeLock
from aggregator.store.db import ConnectionLost
from aggregator.store.thread import StoreThread
from aggregator.timeutil import from_db, now_db, to_db, utcnow
from aggregator.websub.manager import WebSub

log = structlog.get_logger("aggregator.scheduler")

#: Seconds between looks at the database for work other nodes planned or let go (PostgreSQL).
OTHERS_EVERY = 2.0
#: Seconds between looks when this node is the only one (SQLite): only its own plans matter.
ALONE_EVERY = 60.0
#: Seconds to wait before claiming again when due sources wait for a busy host.
HOST_RETRY = 0.25


def policy_of(source: SourceConfig, config: Config) -> str:
    """How ``source`` is scheduled: ``fixed`` (``adaptive = false``), else ``[schedule] policy``."""
    return config.schedule.policy if source.adaptive else "fixed"


def bounds_for(source: SourceConfig, config: Config) -> policy.Bounds:
    """The scheduling bounds of ``source`` under ``config``."""
    learned = policy_of(source, config) == "learned"
    make = policy.learned_bounds if learned else policy.default_bounds
    return make(
        source.interval,
        source.min_interval,
        source.max_interval,
        adaptive=source.adaptive,
        max_backoff=config.schedule.max_backoff,
        network_retry=config.schedule.network_retry,
    )


def lease_for(config: Config) -> float:
    """How long a claim holds a source: ``[schedule] lease``, else a whole poll's limits
    with room to spare."""
    return config.schedule.lease or config.fetch.timeout + config.parse.time_limit + 60.0


class Daemon(Housekeeping):
    """Schedules polls of every enabled source until stopped."""

    def __init__(self, config: Config, *, handle_signals: bool = True) -> None:
        self.config = config
        self.handle_signals = handle_signals
        self.node = Node.here(os.environ.get("AGGREGATOR_NODE") or None)
        #: The adaptive interval each source is at (``sources.interval_now_seconds``).
        self.intervals: dict[str, float] = {}
        self.checking: set[str] = set()
        self.scheduler = AsyncIOScheduler(
            timezone="UTC",
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self.inflight: dict[asyncio.Task[Any], str] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()
        self.store: StoreThread | None = None
        self.pipeline: Pipeline | None = None
        self.delivery: DeliveryWorker | DeliveryProcesses | None = None
        #: WebSub push: the callback endpoint and subscriptions (``aggregator.websub``).
        self.push: WebSub | None = None
        self.network = policy.NetworkMonitor(probe_interval=config.schedule.network_retry)
        self.rng = random.Random()
        self.started_at = now_db()
        self.lock: NodeLock | None = None
        self.claimer: asyncio.Task[Any] | None = None
        #: Set to make the claim loop look again now (a plan came due sooner, room freed).
        self.wake = asyncio.Event()
        #: When the claim loop means to look next (epoch seconds).
        self.look_at = float("inf")
        self.shared = is_postgres(config.storage.database)
        #: The learned rhythms (``[schedule] policy = "learned"``), kept in step with the database.
        self.rhythm = RhythmSync()
        self._rhythm_config: Config | None = None

    @property
    def config(self) -> Config:
        """The config in force (replaced by a reload)."""
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        self._sources = {s.name: s for s in config.sources if s.enabled}

    @property
    def sources(self) -> dict[str, SourceConfig]:
        """The enabled sources of the current config, by name."""
        return self._sources

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``), then shut down cleanly."""
        self.store = StoreThread(
            self.config.storage.database, failing_after=self.config.notify.failing_after
        )
        parsers = ParsePool(self.config.parse)
        try:
            await self._join()
            async with Fetcher(self.config.fetch) as fetcher:
                self.pipeline = Pipeline(self.config, self.store, fetcher, parsers)
                await self.sync_sources()
                self.push = WebSub(self.pipeline, self.node.id, shared=self.shared)
                await self.push.start(wake=self._look)
                parsers.start()  # the process tree is complete from the start
                self._install_signals()
                await self.schedule_sources()
                self.schedule_digests()
                self.delivery = await self._deliver()
                self.scheduler.start()
                summary = await self._heartbeat("running")
                sdnotify.notify("READY=1", f"STATUS={summary}")
                log.info(
                    "daemon.started",
                    sources=len(self.sources),
                    pid=os.getpid(),
                    node=self.node.name,
                    database=cluster.describe(self.store.store.db),
                    parse_workers=parsers.config.workers,
                    parse_memory_capped=parsers.memory_capped,
                )
                # Extra background tasks start here (they are cancelled in _drain).
                self.claimer = self.start_task(self._claim_loop())
                self.start_task(self._heartbeat_loop())
                self.start_task(self._watchdog_loop())
                self.start_task(self._retention_loop())
                self.start_task(self.push.run())
                await self.stopping.wait()
                await self._drain()
        finally:
            parsers.close()
            await self._leave()
            log.info("daemon.stopped")

    async def _deliver(self) -> DeliveryWorker | DeliveryProcesses:
        """Start delivering: in ``[notify] processes`` processes of its own, or in this one."""
        assert self.store is not None
        count = self.config.notify.processes
        if count and any(s.enabled for s in self.config.sinks):
            return await DeliveryProcesses(self.config, self.store, count).start(self.stopping)
        return await DeliveryWorker(self.config, self.store, node=self.node).start(self.stopping)

    async def _join(self) -> None:
        """Take this database's lock (SQLite) and add this node to ``nodes``."""
        assert self.store is not None
        store = self.store.store
        if not self.shared:
            lock = NodeLock(self.config.storage.database)
            if not lock.acquire():
                path = self.config.storage.database
                raise StoreError(await self.store.call(cluster.holder_text, store.db, path))
            self.lock = lock
            await self.store.call(cluster.release_all, store)
        names = sorted(self.sources)
        await self.store.call(cluster.register, store, self.node, self.config.path, names)

    async def _leave(self) -> None:
        """Give back what this node holds, close the database, release the lock."""
        if self.store is None:
            return
        if self.lock is not None or self.shared:  # it joined: give back what it holds
            with contextlib.suppress(Exception):
                await self.store.call(self.store.store.flush)
                await self.store.call(cluster.release, self.store.store.db, self.node.id)
        self.store.close()
        if self.lock is not None:
            self.lock.release()

    def stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler)."""
        self.stopping.set()

    def start_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background until it ends or the daemon drains."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    # -- sources ---------------------------------------------------------------

    async def sync_sources(self) -> None:
        """Register the configured sources; this node claims only those, and warns about
        sources other running nodes are configured with that it is not."""
        assert self.store is not None and self.pipeline is not None
        store = self.store.store
        others = await self.store.call(cluster.others_sources, store.db, self.node.id)
        keep = set().union(*others.values()) if others else set()
        await self.pipeline.sync(keep=keep)
        mine = sorted(self.sources)
        await self.store.call(cluster.set_mine, store, [self.pipeline.source_ids[n] for n in mine])
        await self.store.call(cluster.set_sources, store, self.node, mine)
        for other, theirs in others.items():
            if missing := sorted(theirs - set(mine)):
                log.warning(
                    "cluster.config_differs",
                    node=other,
                    sources_not_here=missing[:20],
                    count=len(missing),
                    effect="this node leaves them to that node; their history is kept",
                )

    # -- scheduling ----------------------------------------------------------

    async def schedule_sources(self, names: set[str] | None = None) -> None:
        """Plan the first check of each enabled source (default: all of them).

        A source with a planned check in the future keeps it; one overdue or never
        polled is spread over the start-up window. A source another node holds now
        is left alone.
        """
        assert self.store is not None
        states = await self.store.call(scheduling.source_states, self.store.store)
        now = utcnow()
        plans = []
        chosen = [n for n in self.sources if names is None or n in names]
        spread = policy.startup_window(self.config.schedule.startup_spread, len(chosen))
        for name in chosen:
            source, state = self.sources[name], states[name]
            if state.gone:
                log.warning("source.gone_skipped", source=name, url=state.url)
                continue
            self.intervals[name] = state.interval_now or source.interval
            if state.held or (state.next_check_at is not None and state.next_check_at > now):
                continue  # planned already (or in another node's hands): keep it
            delay = policy.initial_delay(
                now=now,
                bounds=bounds_for(source, self.config),
                next_check_at=state.next_check_at,
                last_fetch_at=state.last_fetch_at,
                spread=spread,
                rng=self.rng,
            )
            at = now + timedelta(seconds=delay)
            plans.append((state.source_id, at, self.intervals[name], "start-up"))
        self._update_network_hosts()
        await self.store.call(scheduling.save_schedules, self.store.store, plans)
        self._look(time.time())

    def _look(self, at: float) -> None:
        """Make the claim loop look no later than ``at`` (epoch seconds)."""
        if at < self.look_at:
            self.look_at = at
            self.wake.set()

    @property
    def capacity(self) -> int:
        """How many more checks may start now."""
        assert self.pipeline is not None
        return max(0, self.pipeline.capacity - len(self.inflight))

    async def _claim_loop(self) -> None:
        """Claim due sources and start their checks, until the daemon stops."""
        assert self.store is not None
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                found = await self._claim()
            except ConnectionLost:  # database.lost was logged: wait and try again
                wait = 1.0
            except Exception as exc:
                log.warning("schedule.claim_failed", error=str(exc))
                wait = 5.0
            else:
                wait = self._next_look(found)
            self.look_at = time.time() + wait
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()

    async def _claim(self) -> ClaimRound:
        assert self.store is not None
        room = self.capacity
        if room == 0:
            return ClaimRound([], None, 1)
        found = await self.store.call(
            functools.partial(
                cluster.claim_due,
                self.store.store,
                self.node,
                limit=room,
                lease=lease_for(self.config),
                per_host=self.config.fetch.per_host,
            )
        )
        loop = asyncio.get_running_loop()
        for claimed in found.claimed:
            task = loop.create_task(self._job(claimed))
            self.inflight[task] = claimed.name
            task.add_done_callback(self._check_done)
        return found

    def _next_look(self, found: ClaimRound) -> float:
        """Seconds until the loop should claim again."""
        now = time.time()
        wait = OTHERS_EVERY if self.shared else ALONE_EVERY
        if found.next_due is not None:
            wait = min(wait, from_db(found.next_due).timestamp() - now)
        if found.waiting:  # room or a host's cap: a finished check wakes the loop sooner
            wait = min(wait, HOST_RETRY if self.capacity else OTHERS_EVERY)
        return max(0.0, wait) + 0.001

    def _check_done(self, task: asyncio.Task[Any]) -> None:
        self.inflight.pop(task, None)
        self.wake.set()  # room for another check; due sources may be waiting

    def _update_network_hosts(self) -> None:
        hosts = {urlsplit(s.url).hostname for s in self.sources.values()}
        self.network.min_hosts = min(3, len(hosts)) if len(hosts) >= 2 else 1 << 30

    async def _job(self, claimed: Claimed) -> None:
        name = claimed.name
        source = self.sources.get(name)
        if source is None or self.stopping.is_set() or name in self.checking:
            await self._give_back(claimed, source)
            return
        if claimed.interval_now:
            self.intervals[name] = claimed.interval_now
        self.checking.add(name)
        try:
            await self._check(source, claimed.claim)
        except Exception as exc:  # a bug must not end this source's polling
            log.exception("schedule.crashed", source=name, error=str(exc))
            if not self.stopping.is_set():
                source_id = claimed.source_id
                self._save(name, source_id, source.interval, None, "crashed", claimed.claim)
        finally:
            self.checking.discard(name)

    async def _give_back(self, claimed: Claimed, source: SourceConfig | None) -> None:
        """Return a claim unused (removed from the config, or shutting down)."""
        assert self.store is not None
        at = None if source is None else now_db()
        await self.store.call(
            cluster.unclaim, self.store.store, claimed.source_id, claimed.claim, at
        )

    async def _check(self, source: SourceConfig, claim: int | None = None) -> None:
        assert self.store is not None and self.pipeline is not None
        store = self.store.store
        name = source.name
        source_id = self.pipeline.source_ids[name]
        interval_now = self.intervals.get(name)
        clock = time.monotonic()
        if self.network.is_down(clock) and not self.network.take_probe(clock):
            delay = policy.jittered(self.network.probe_interval, self.rng)
            self._save(name, source_id, delay, interval_now, "network down: waiting", claim)
            return
        if policy_of(source, self.config) == "learned":
            self._learn()
            await self.rhythm.ready(self.store)
        before = store.fetch_state(source_id)  # the store's cache: no round trip
        before_url = before.url if before is not None else source.url
        started = time.time()
        result = await self.pipeline.poll(source, claim=claim)
        if result.outcome == "lease_lost":
            return  # another node holds the source now: it plans the next check
        after = store.fetch_state(source_id)
        current = self.sources.get(name)
        new_url = after.url if after is not None else before_url
        if new_url != before_url and current is not None and current.url == source.url:
            # a permanent redirect (not the user re-pointing the source in a reload)
            log.warning("source.moved", source=name, old_url=before_url, new_url=new_url)
            await self.store.call(scheduling.note_moved, store, source_id, before_url)
        transport = policy.is_transport_error(result.status, result.error)
        host = urlsplit(before_url).hostname or ""
        self.network.record(time.monotonic(), host, ok=result.ok, transport_error=transport)
        if self.stopping.is_set() or current is None:
            return  # removed by a reload meanwhile, or shutting down
        failures = after.consecutive_failures if after is not None else 0
        decision = self.rhythm.next_check(
            policy_of(current, self.config), name, bounds_for(current, self.config),
            interval_now, _observation(result, failures, transport), started=started,
            new_dates=result.new_dates, edits=result.counts["changed"] + result.counts["restored"],
            network_down=self.network.is_down(time.monotonic()), rng=self.rng,
        )  # fmt: skip
        if decision.gone:
            log.error("source.gone", source=name, url=new_url, error=result.error)
            self.intervals.pop(name, None)
            await self.store.call(scheduling.mark_gone, store, source_id, result.error)
            return
        self._save(name, source_id, decision.delay, decision.interval, decision.reason, claim)

    def _learn(self) -> None:
        """Tell the learned schedule which sources share its budget (once per config)."""
        if self._rhythm_config is self.config or self.pipeline is None:
            return
        config, ids = self.config, self.pipeline.source_ids
        learned = {n for n, s in self.sources.items() if policy_of(s, config) == "learned"}
        self.rhythm.configure(
            {n: (ids[n], bounds_for(self.sources[n], config)) for n in learned if n in ids},
            [s.interval for n, s in self.sources.items() if n not in learned],
            config.schedule.requests_per_day,
        )
        self._rhythm_config = config

    def _save(
        self,
        name: str,
        source_id: int,
        delay: float,
        interval: float | None,
        reason: str,
        claim: int | None = None,
    ) -> None:
        """Plan the next check and hand it to the store's next batched write."""
        assert self.store is not None
        if self.push is not None:  # a live WebSub subscription: only the safety poll
            delay, reason = self.push.plan(source_id, delay, reason)
        due = time.time() + max(delay, 0.0)
        interval = self.intervals[name] = interval or self.sources[name].interval
        at = to_db(utcnow() + timedelta(seconds=max(delay, 0.0)))
        self.store.store.plan_check(source_id, at, interval, reason, claim)
        self._look(due)
        log.debug("schedule.next", source=name, delay=round(delay, 1), reason=reason)

    # -- reload ----------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the config file; apply source changes, or keep the old config on error."""
        assert self.pipeline is not None
        path = self.config.path
        try:
            new = config_mod.load(path)
        except ConfigError as exc:
            log.error("config.reload_failed", path=path, error=str(exc), kept="previous config")
            return
        fixed = ("storage", "fetch", "parse", "browser", "images", "websub")
        if any(getattr(new, t) != getattr(self.config, t) for t in fixed):
            log.warning(
                "config.restart_needed",
                reason="[storage], [fetch], [parse], [browser], [images] and [websub] apply"
                " on restart",
            )
            new = new.model_copy(update={t: getattr(self.config, t) for t in fixed})
        old = self.sources
        self.config = self.pipeline.config = new
        await self.sync_sources()
        current = self.sources
        removed = set(old) - set(current)
        added = set(current) - set(old)
        changed = {n for n in set(old) & set(current) if old[n] != current[n]}
        for name in removed:
            self.intervals.pop(name, None)
        await self.store_reset(changed)
        await self.schedule_sources(added | changed)
        if self.push is not None:  # a source's push setting may have changed
            self.push.kick.set()
        self.schedule_digests()
        log.info(
            "config.reloaded",
            added=sorted(added),
            removed=sorted(removed),
            changed=sorted(changed),
        )
        await self._heartbeat("running")

    async def store_reset(self, names: set[str]) -> None:
        """Forget the planned time and adaptive interval of sources whose config changed."""
        assert self.store is not None and self.pipeline is not None
        ids = [self.pipeline.source_ids[n] for n in names]
        await self.store.call(scheduling.reset_schedules, self.store.store, ids)

    # -- signals, heartbeat, watchdog, shutdown ---------------------------------

    def _install_signals(self) -> None:
        if not self.handle_signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.start_task(self.reload()))

    async def _drain(self) -> None:
        sdnotify.notify("STOPPING=1")
        log.info("daemon.stopping", inflight=sorted(self.inflight.values()))
        if self.claimer is not None:  # no new checks from now on
            self.claimer.cancel()
        if self.push is not None:  # nor pushed ones
            await self.push.stop()
        self.scheduler.pause()
        pending: set[asyncio.Task[Any]] = set(self.inflight)
        if pending:
            _done, pending = await asyncio.wait(
                pending, timeout=self.config.schedule.shutdown_grace
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
                log.warning("daemon.cancelled", sources=sorted(self.inflight.values()))
        # Extra background tasks stop here.
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.scheduler.shutdown(wait=False)
        if self.delivery is not None:
            await self.delivery.stop(self.config.schedule.shutdown_grace)
        with contextlib.suppress(Exception):
            await self._heartbeat("stopped")


def _observation(result: PollResult, failures: int, transport: bool) -> policy.Observation:
    return policy.Observation(
        ok=result.ok,
        changed=result.outcome == "changed",
        status=result.status,
        transport_error=transport,
        retry_after=result.retry_after,
        max_age=result.cache_max_age,
        ttl=float(result.ttl_seconds) if result.ttl_seconds else None,
        skip_hours=result.skip_hours,
        failures=failures,
        skip_days=result.hints.skip_days,
        update_period=result.hints.update_period,
        ended=ended(result.hints),
    )
