"""The daemon's chores besides polling: heartbeat, watchdog, retention, digests.

``Housekeeping`` is mixed into ``aggregator.scheduler.Daemon``; it uses the
daemon's store thread, config, APScheduler instance and network monitor.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from aggregator import sdnotify
from aggregator.digest.schedule import DigestJob, build_digest_jobs
from aggregator.store import cluster, scheduling
from aggregator.store.db import ConnectionLost
from aggregator.store.retention import RetentionPass

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from aggregator.config import Config
    from aggregator.schedule_policy import NetworkMonitor
    from aggregator.store.cluster import Node
    from aggregator.store.thread import StoreThread

log = structlog.get_logger("aggregator.scheduler")

#: Seconds after start, then between, two retention passes (``fetches``, delivered events).
RETENTION_FIRST = 60.0
RETENTION_EVERY = 3600.0

#: Seconds between heartbeats (``daemon_state`` row and systemd ``STATUS=``).
HEARTBEAT = 10.0


class Housekeeping:
    """Heartbeat (``daemon_state`` and systemd ``STATUS=``), watchdog, retention, digests."""

    store: StoreThread | None
    config: Config
    scheduler: AsyncIOScheduler
    network: NetworkMonitor
    started_at: str
    inflight: dict[asyncio.Task[Any], str]
    node: Node

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

    async def _heartbeat(self, state: str) -> str:
        assert self.store is not None
        store = self.store.store
        summary = await self.store.call(scheduling.summary_line, store.db)
        network = "down" if self.network.is_down(time.monotonic()) else "up"
        inflight = list(self.inflight.values())
        outages = self.store.outages
        database = f"up (back after {outages[-1]:g} s away)" if outages else "up"

        def write() -> None:
            scheduling.write_daemon_state(
                store,
                state,
                started_at=self.started_at,
                config_path=self.config.path,
                summary=summary,
                inflight=inflight,
                network=network,
            )
            cluster.heartbeat(
                store,
                self.node,
                state,
                summary=summary,
                network=network,
                inflight=inflight,
                database=database,
            )

        await self.store.call(write)
        return summary

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                summary = await self._heartbeat("running")
            except ConnectionLost as exc:  # database.lost was logged when it went
                sdnotify.notify(f"STATUS={exc}")
                continue
            except Exception as exc:  # the heartbeat must never stop the daemon
                log.warning("heartbeat.failed", error=str(exc))
                continue
            sdnotify.notify(f"STATUS={summary}")

    async def _retention_loop(self) -> None:
        """Apply ``[storage]`` retention a minute after start, then hourly.

        The fetch log and delivered events, one batch per store call, so polls write in
        between.
        """
        assert self.store is not None
        delay = RETENTION_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = RETENTION_EVERY
            try:
                removed = await self._prune()
            except Exception as exc:  # pruning must never stop the daemon
                log.warning("retention.failed", error=str(exc))
                continue
            if any(removed.values()):
                log.info("retention.pruned", **removed)

    async def _prune(self) -> dict[str, int]:
        """One retention pass (unless another node is doing one); rows each rule removed."""
        assert self.store is not None
        db = self.store.store.db
        if not await self.store.call(cluster.take_chore, db, "retention"):
            log.debug("retention.skipped", reason="another node is pruning")
            return {}
        try:
            run = RetentionPass.of(db, self.config.storage)
            while await self.store.call(run.step):
                pass
        finally:
            await self.store.call(cluster.end_chore, db, "retention")
        return run.removed

    async def _watchdog_loop(self) -> None:
        period = sdnotify.watchdog_period()
        if period is None:
            return
        while True:  # pinged from the event loop itself: a hung loop stops the pings
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(period)
