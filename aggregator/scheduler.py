"""The daemon: APScheduler polls each source on its interval until SIGTERM.

One interval job per source (``source:<name>``), started at a random offset
within its interval so a restart does not make every source due at once.
Jobs are never skipped for being late (``misfire_grace_time=None``), never
overlap (``max_instances=1``) and coalesce missed runs. On SIGTERM/SIGINT the
scheduler pauses, in-flight polls get ``shutdown_grace`` seconds to finish,
and the database is closed cleanly.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from aggregator.config import Config, SourceConfig
from aggregator.fetch import Fetcher
from aggregator.notify.worker import DeliveryWorker
from aggregator.pipeline import Pipeline
from aggregator.store.thread import StoreThread
from aggregator.timeutil import utcnow

log = structlog.get_logger("aggregator.scheduler")


class Daemon:
    """Schedules polls of every enabled source until stopped."""

    def __init__(self, config: Config, *, shutdown_grace: float = 20.0) -> None:
        self.config = config
        self.shutdown_grace = shutdown_grace
        self.scheduler = AsyncIOScheduler(
            timezone="UTC",
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self.inflight: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()
        self.store: StoreThread | None = None
        self.pipeline: Pipeline | None = None
        self.delivery: DeliveryWorker | None = None

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
                self.schedule_sources()
                self.delivery = await DeliveryWorker(self.config, self.store).start(self.stopping)
                self.scheduler.start()
                log.info("daemon.started", sources=len(self.scheduler.get_jobs()))
                await self.stopping.wait()
                await self._drain()
        finally:
            self.store.close()
            log.info("daemon.stopped")

    def stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler)."""
        self.stopping.set()

    def schedule_sources(self) -> None:
        """One job per enabled source, first run spread over its interval."""
        for source in self.config.sources:
            if source.enabled:
                self._add_job(source)

    def _add_job(self, source: SourceConfig) -> None:
        interval = source.interval
        first = utcnow() + timedelta(seconds=random.uniform(0, min(interval, 60.0)))
        self.scheduler.add_job(
            self._guarded(self._poll, source),
            IntervalTrigger(seconds=interval, jitter=interval * 0.05),
            id=f"source:{source.name}",
            name=source.name,
            next_run_time=first,
            replace_existing=True,
        )

    def _guarded(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        async def job() -> None:
            if self.stopping.is_set():
                return
            task = asyncio.current_task()
            assert task is not None
            self.inflight.add(task)
            try:
                await fn(*args)
            finally:
                self.inflight.discard(task)

        return job

    async def _poll(self, source: SourceConfig) -> None:
        assert self.pipeline is not None
        await self.pipeline.poll(source)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _drain(self) -> None:
        log.info("daemon.stopping", inflight=len(self.inflight))
        self.scheduler.pause()
        if self.inflight:
            _done, pending = await asyncio.wait(set(self.inflight), timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self.scheduler.shutdown(wait=False)
        if self.delivery is not None:
            await self.delivery.stop(self.shutdown_grace)
