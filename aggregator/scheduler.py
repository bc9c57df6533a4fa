"""The daemon: polls each source when it is due, politely, until SIGTERM.

Each source has one APScheduler job (``source:<name>``, a one-shot
``DateTrigger``) that polls it and then plans its own next run from
``aggregator.schedule_policy``; the plan is written to ``sources.next_check_at``
so a restart picks up where it left off instead of making everything due.
Jobs are never skipped for being late (``misfire_grace_time=None``).

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
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from aggregator import config as config_mod
from aggregator import schedule_policy as policy
from aggregator import sdnotify
from aggregator.config import Config, SourceConfig
from aggregator.digest.schedule import DigestJob, build_digest_jobs
from aggregator.errors import ConfigError
from aggregator.fetch import Fetcher
from aggregator.notify.worker import DeliveryWorker
from aggregator.pipeline import Pipeline, PollResult
from aggregator.store import scheduling
from aggregator.store.scheduling import SourceState
from aggregator.store.thread import StoreThread
from aggregator.timeutil import now_db, utcnow

log = structlog.get_logger("aggregator.scheduler")

#: Seconds after start, then between, two prunings of the ``fetches`` log.
RETENTION_FIRST = 60.0
RETENTION_EVERY = 3600.0

#: Seconds between heartbeats (``daemon_state`` row and systemd ``STATUS=``).
HEARTBEAT = 10.0


def bounds_for(source: SourceConfig, config: Config) -> policy.Bounds:
    """The scheduling bounds of ``source`` under ``config``."""
    return policy.default_bounds(
        source.interval,
        source.min_interval,
        source.max_interval,
        adaptive=source.adaptive,
        max_backoff=config.schedule.max_backoff,
        network_retry=config.schedule.network_retry,
    )


class Daemon:
    """Schedules polls of every enabled source until stopped."""

    def __init__(self, config: Config, *, handle_signals: bool = True) -> None:
        self.config = config
        self.handle_signals = handle_signals
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

    @property
    def sources(self) -> dict[str, SourceConfig]:
        """The enabled sources of the current config, by name."""
        return {s.name: s for s in self.config.sources if s.enabled}

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``), then shut down cleanly."""
        self.store = StoreThread(
            self.config.storage.database, failing_after=self.config.notify.failing_after
        )
        try:
            async with Fetcher(self.config.fetch) as fetcher:
                self.pipeline = Pipeline(self.config, self.store, fetcher)
                await self.pipeline.sync()
                self._install_signals()
                await self.schedule_sources()
                self.schedule_digests()
                self.delivery = await DeliveryWorker(self.config, self.store).start(self.stopping)
                self.scheduler.start()
                summary = await self._heartbeat("running")
                sdnotify.notify("READY=1", f"STATUS={summary}")
                log.info("daemon.started", sources=len(self.scheduler.get_jobs()), pid=os.getpid())
                # Extra background tasks start here (they are cancelled in _drain).
                self.start_task(self._heartbeat_loop())
                self.start_task(self._watchdog_loop())
                self.start_task(self._retention_loop())
                await self.stopping.wait()
                await self._drain()
        finally:
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
        plans = []
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
                spread=self.config.schedule.startup_spread,
                rng=self.rng,
            )
            at = self._plan(name, delay)
            plans.append((state.source_id, at, state.interval_now or source.interval, "start-up"))
        self._update_network_hosts()
        await self.store.call(scheduling.save_schedules, self.store.store, plans)

    def _plan(self, name: str, delay: float) -> datetime:
        run_at = utcnow() + timedelta(seconds=max(delay, 0.0))
        self.scheduler.add_job(
            self._job,
            DateTrigger(run_date=run_at),
            args=[name],
            id=f"source:{name}",
            name=name,
            replace_existing=True,
        )
        return run_at

    def _unplan(self, name: str) -> None:
        with contextlib.suppress(Exception):  # JobLookupError: not planned right now
            self.scheduler.remove_job(f"source:{name}")

    def _update_network_hosts(self) -> None:
        hosts = {urlsplit(s.url).hostname for s in self.sources.values()}
        self.network.min_hosts = min(3, len(hosts)) if len(hosts) >= 2 else 1 << 30

    async def _job(self, name: str) -> None:
        source = self.sources.get(name)
        task = asyncio.current_task()
        if source is None or self.stopping.is_set() or task is None:
            return
        self.inflight[task] = name
        try:
            await self._check(source)
        except Exception as exc:  # a bug must not end this source's polling
            log.exception("schedule.crashed", source=name, error=str(exc))
            if not self.stopping.is_set():
                self._plan(name, source.interval)
        finally:
            self.inflight.pop(task, None)

    async def _check(self, source: SourceConfig) -> None:
        assert self.store is not None and self.pipeline is not None
        store = self.store.store
        source_id = self.pipeline.source_ids[source.name]
        before = await self.store.call(scheduling.source_state, store, source_id)
        clock = time.monotonic()
        if self.network.is_down(clock) and not self.network.take_probe(clock):
            delay = policy.jittered(self.network.probe_interval, self.rng)
            await self._save(before, delay, before.interval_now, "network down: waiting")
            return
        result = await self.pipeline.poll(source)
        after = await self.store.call(scheduling.source_state, store, source_id)
        if after.url != before.url and after.config_url == before.config_url:
            log.warning("source.moved", source=source.name, old_url=before.url, new_url=after.url)
            await self.store.call(scheduling.note_moved, store, source_id, before.url)
        transport = policy.is_transport_error(result.status, result.error)
        host = urlsplit(before.url).hostname or ""
        self.network.record(time.monotonic(), host, ok=result.ok, transport_error=transport)
        if self.stopping.is_set() or source.name not in self.sources:
            return  # removed by a reload meanwhile, or shutting down
        current = self.sources[source.name]
        decision = policy.decide(
            bounds_for(current, self.config),
            before.interval_now,
            _observation(result, after.failures, transport),
            network_down=self.network.is_down(time.monotonic()),
        )
        if decision.gone:
            log.error("source.gone", source=source.name, url=after.url, error=result.error)
            await self.store.call(scheduling.mark_gone, store, source_id, result.error)
            return
        delay = policy.jittered(decision.delay, self.rng)
        delay = policy.skip_hours_delay(utcnow(), delay, result.skip_hours)
        await self._save(after, delay, decision.interval, decision.reason)

    async def _save(
        self, state: SourceState, delay: float, interval: float | None, reason: str
    ) -> None:
        assert self.store is not None
        at = self._plan(state.name, delay)
        interval = interval or self.sources[state.name].interval
        await self.store.call(
            scheduling.save_schedule, self.store.store, state.source_id, at, interval, reason
        )
        log.debug("schedule.next", source=state.name, delay=round(delay, 1), reason=reason)

    def schedule_digests(self) -> None:
        """One cron job per ``[[digests]]`` entry; each enqueues its digest in the outbox."""
        for job in self.scheduler.get_jobs():
            if job.id.startswith("digest:"):
                job.remove()
        for digest in build_digest_jobs(self.config):
            self.scheduler.add_job(
                self._send_digest, digest.trigger, args=[digest], id=digest.id, name=digest.id
            )

    async def _send_digest(self, digest: DigestJob) -> None:
        assert self.store is not None
        event_id = await self.store.call(digest.run, self.store.store)
        log.info("digest.enqueued" if event_id else "digest.empty", digest=digest.config.name)

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
        if new.storage != self.config.storage or new.fetch != self.config.fetch:
            log.warning("config.restart_needed", reason="[storage] and [fetch] apply on restart")
            new = new.model_copy(
                update={"storage": self.config.storage, "fetch": self.config.fetch}
            )
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

    async def _heartbeat(self, state: str) -> str:
        assert self.store is not None
        store = self.store.store
        summary = await self.store.call(scheduling.summary_line, store.db)
        down = self.network.is_down(time.monotonic())
        await self.store.call(
            lambda: scheduling.write_daemon_state(
                store,
                state,
                started_at=self.started_at,
                config_path=self.config.path,
                summary=summary,
                inflight=list(self.inflight.values()),
                network="down" if down else "up",
            )
        )
        return summary

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                summary = await self._heartbeat("running")
            except Exception as exc:  # the heartbeat must never stop the daemon
                log.warning("heartbeat.failed", error=str(exc))
                continue
            sdnotify.notify(f"STATUS={summary}")

    async def _retention_loop(self) -> None:
        """Prune ``fetches`` to ``[storage] keep_fetches``: a minute after start, then hourly."""
        assert self.store is not None
        delay = RETENTION_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = RETENTION_EVERY
            try:
                keep = self.config.storage.keep_fetches
                removed = await self.store.call(self.store.store.prune_fetches, keep)
            except Exception as exc:  # pruning must never stop the daemon
                log.warning("retention.failed", error=str(exc))
                continue
            if removed:
                log.info("retention.pruned", fetches=removed)

    async def _watchdog_loop(self) -> None:
        period = sdnotify.watchdog_period()
        if period is None:
            return
        while True:  # pinged from the event loop itself: a hung loop stops the pings
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(period)

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
    )
