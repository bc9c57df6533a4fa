"""The daemon: polls each source when it is due, politely, until SIGTERM.

Every source's next check is a plan in one ``DueQueue``; a single APScheduler
job (``sources``) fires when plans come due and starts those checks. Each check
plans its own next one from ``aggregator.schedule_policy``, using the store's
cached fetch state (no database round trip); the plan goes to
``sources.next_check_at`` with the store's next batched write (within seconds,
at the latest with the heartbeat), so a restart picks up where it left off
instead of making everything due. Checks are never skipped for being late.

Signals: SIGTERM/SIGINT stop scheduling, give in-flight polls
``[schedule] shutdown_grace`` seconds, cancel the rest and close the database.
SIGHUP re-reads the config: added sources start, removed ones stop (their
history stays), changed timings apply; a bad config is logged and ignored.
Under systemd the daemon speaks sd_notify (READY, STATUS, WATCHDOG, STOPPING).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregator import config as config_mod
from aggregator import schedule_policy as policy
from aggregator import sdnotify
from aggregator.config import Config, SourceConfig
from aggregator.errors import ConfigError
from aggregator.fetch import Fetcher
from aggregator.housekeeping import Housekeeping
from aggregator.notify.worker import DeliveryWorker
from aggregator.pipeline import Pipeline, PollResult
from aggregator.rhythm_sync import RhythmSync, ended
from aggregator.sandbox import ParsePool
from aggregator.schedule_queue import DueQueue, epoch_now
from aggregator.store import scheduling
from aggregator.store.thread import StoreThread
from aggregator.timeutil import now_db, to_db, utcnow

log = structlog.get_logger("aggregator.scheduler")

#: The APScheduler job that starts the checks whose plans are due.
SOURCES_JOB = "sources"


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


class Daemon(Housekeeping):
    """Schedules polls of every enabled source until stopped."""

    def __init__(self, config: Config, *, handle_signals: bool = True) -> None:
        self.config = config
        self.handle_signals = handle_signals
        self.queue = DueQueue()
        #: The adaptive interval each planned source is at (``sources.interval_now_seconds``).
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
        self.delivery: DeliveryWorker | None = None
        self.network = policy.NetworkMonitor(probe_interval=config.schedule.network_retry)
        self.rng = random.Random()
        self.started_at = now_db()
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
            async with Fetcher(self.config.fetch) as fetcher:
                self.pipeline = Pipeline(self.config, self.store, fetcher, parsers)
                await self.pipeline.sync()
                parsers.start()  # the process tree is complete from the start
                self._install_signals()
                self.scheduler.add_job(
                    self._dispatch, self.queue, id=SOURCES_JOB, name=SOURCES_JOB,
                    next_run_time=self.queue.park(epoch_now()),
                )  # fmt: skip
                await self.schedule_sources()
                self.schedule_digests()
                self.delivery = await DeliveryWorker(self.config, self.store).start(self.stopping)
                self.scheduler.start()
                summary = await self._heartbeat("running")
                sdnotify.notify("READY=1", f"STATUS={summary}")
                log.info(
                    "daemon.started",
                    sources=len(self.queue),
                    pid=os.getpid(),
                    parse_workers=parsers.config.workers,
                    parse_memory_capped=parsers.memory_capped,
                )
                # Extra background tasks start here (they are cancelled in _drain).
                self.start_task(self._heartbeat_loop())
                self.start_task(self._watchdog_loop())
                self.start_task(self._retention_loop())
                await self.stopping.wait()
                await self._drain()
        finally:
            parsers.close()
            self.store.close()
            log.info("daemon.stopped")

    def stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler)."""
        self.stopping.set()

    def start_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background until it ends or the daemon drains."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    # -- scheduling ----------------------------------------------------------

    async def schedule_sources(self, names: set[str] | None = None) -> None:
        """Plan the first check of each enabled source (default: all of them)."""
        assert self.store is not None
        states = await self.store.call(scheduling.source_states, self.store.store)
        now = utcnow()
        store = self.store.store
        plans = []
        chosen = [n for n in self.sources if names is None or n in names]
        spread = policy.startup_window(self.config.schedule.startup_spread, len(chosen))
        for name, source in self.sources.items():
            if names is not None and name not in names:
                continue
            state = states[name]
            if state.gone:
                log.warning("source.gone_skipped", source=name, url=state.url)
                continue
            delay = policy.initial_delay(
                now=now,
                bounds=bounds_for(source, self.config),
                next_check_at=state.next_check_at,
                last_fetch_at=state.last_fetch_at,
                spread=spread,
                rng=self.rng,
            )
            at = _as_datetime(self._plan(name, delay))
            interval = self.intervals[name] = state.interval_now or source.interval
            plans.append((state.source_id, at, interval, "start-up"))
        self._update_network_hosts()
        await self.store.call(scheduling.save_schedules, store, plans)

    def _plan(self, name: str, delay: float) -> float:
        """Plan the check of ``name`` in ``delay`` seconds; returns its due time (epoch)."""
        due = epoch_now() + max(delay, 0.0)
        self.queue.plan(name, due)
        if due < self.queue.armed:  # earlier than the job's next run: bring it forward
            self.queue.armed = due
            self.scheduler.modify_job(SOURCES_JOB, next_run_time=_as_datetime(due))
        return due

    def _unplan(self, name: str) -> None:
        self.queue.forget(name)
        self.intervals.pop(name, None)

    async def _dispatch(self) -> None:
        """The ``sources`` job: start the check of every source whose plan is due."""
        loop = asyncio.get_running_loop()
        for name in self.queue.pop_ready():
            if name in self.checking:  # re-planned by a reload mid-check: that check plans next
                continue
            task = loop.create_task(self._job(name))
            self.inflight[task] = name
            task.add_done_callback(self._check_done)

    def _check_done(self, task: asyncio.Task[Any]) -> None:
        self.inflight.pop(task, None)

    def _update_network_hosts(self) -> None:
        hosts = {urlsplit(s.url).hostname for s in self.sources.values()}
        self.network.min_hosts = min(3, len(hosts)) if len(hosts) >= 2 else 1 << 30

    async def _job(self, name: str) -> None:
        source = self.sources.get(name)
        if source is None or self.stopping.is_set():
            return
        self.checking.add(name)
        try:
            await self._check(source)
        except Exception as exc:  # a bug must not end this source's polling
            log.exception("schedule.crashed", source=name, error=str(exc))
            if not self.stopping.is_set():
                self._plan(name, source.interval)
        finally:
            self.checking.discard(name)

    async def _check(self, source: SourceConfig) -> None:
        assert self.store is not None and self.pipeline is not None
        store = self.store.store
        name = source.name
        source_id = self.pipeline.source_ids[name]
        interval_now = self.intervals.get(name)
        clock = time.monotonic()
        if self.network.is_down(clock) and not self.network.take_probe(clock):
            delay = policy.jittered(self.network.probe_interval, self.rng)
            self._save(name, source_id, delay, interval_now, "network down: waiting")
            return
        if policy_of(source, self.config) == "learned":
            self._learn()
            await self.rhythm.ready(self.store)
        before = store.fetch_state(source_id)  # the store's cache: no round trip
        before_url = before.url if before is not None else source.url
        started = time.time()
        result = await self.pipeline.poll(source)
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
            self._unplan(name)
            await self.store.call(scheduling.mark_gone, store, source_id, result.error)
            return
        self._save(name, source_id, decision.delay, decision.interval, decision.reason)

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
        self, name: str, source_id: int, delay: float, interval: float | None, reason: str
    ) -> None:
        """Plan the next check and hand it to the store's next batched write."""
        assert self.store is not None
        at = self._plan(name, delay)
        interval = self.intervals[name] = interval or self.sources[name].interval
        self.store.store.plan_check(source_id, to_db(_as_datetime(at)), interval, reason)
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
        fixed = ("storage", "fetch", "parse")
        if any(getattr(new, t) != getattr(self.config, t) for t in fixed):
            log.warning(
                "config.restart_needed", reason="[storage], [fetch] and [parse] apply on restart"
            )
            new = new.model_copy(update={t: getattr(self.config, t) for t in fixed})
        old = self.sources
        self.config = self.pipeline.config = new
        await self.pipeline.sync()
        current = self.sources
        removed = set(old) - set(current)
        added = set(current) - set(old)
        changed = {n for n in set(old) & set(current) if old[n] != current[n]}
        for name in removed:
            self._unplan(name)
        await self.store_reset(changed)
        await self.schedule_sources(added | changed)
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


def _as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


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
