"""Scheduled digests: render on a cron schedule and hand the result to the outbox.

The daemon adds one cron job per ``[[digests]]`` entry (``build_digest_jobs``)
and runs ``DigestJob.run`` on the store's thread. When the window holds no
change nothing is enqueued; otherwise one outbox event of type ``digest``
carries the text and the HTML, and the notification worker delivers it to the
named sink. The event id is derived from the digest's name and window, and the
window ends at the job's scheduled time (not the moment it ran), so a job that
runs twice for the same window, or on several nodes at once, enqueues one event.
A source's first listing (its baseline) is left out unless the digest's sink has
``send_first_listing``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from aggregator.config import Config, DigestConfig
from aggregator.digest.model import Digest, build_digest, counts_line
from aggregator.digest.page import render_page
from aggregator.digest.text import render_markdown, render_text
from aggregator.store import Store
from aggregator.store.queries import Reader, enqueue_digest
from aggregator.timeutil import to_db, utcnow

_NAMESPACE = uuid.UUID("6f1c1f3e-4d53-4a43-9a7e-0b0f8f6c2a11")


@dataclass(frozen=True, slots=True)
class DigestJob:
    """One ``[[digests]]`` entry, ready for the scheduler."""

    config: DigestConfig
    trigger: CronTrigger
    first_listing: bool = False

    @property
    def id(self) -> str:
        """The scheduler job id, ``digest:<name>``."""
        return f"digest:{self.config.name}"

    def run(self, store: Store, now: datetime | None = None) -> str | None:
        """Enqueue the digest ending at the scheduled time at or before ``now``; returns the
        event id, or None if nothing changed."""
        until = self.scheduled(now or utcnow())
        return enqueue_scheduled_digest(store, self.config, until, first_listing=self.first_listing)

    def scheduled(self, now: datetime) -> datetime:
        """The job's latest fire time at or before ``now``, within its window (``since``).

        A job that runs late (a busy node) still ends its window at its cron time, as the
        node that ran it on time did; run outside its schedule (by hand), it ends ``now``.
        """
        fire = self.trigger.get_next_fire_time(None, now - timedelta(seconds=self.config.since))
        if fire is None or fire > now:
            return now
        while (later := self.trigger.get_next_fire_time(fire, fire + _SECOND)) and later <= now:
            fire = later
        return fire


_SECOND = timedelta(seconds=1)


def build_digest_jobs(config: Config) -> list[DigestJob]:
    """One job per configured digest, with its cron trigger (UTC)."""
    sends_all = {s.name for s in config.sinks if s.send_first_listing}
    return [
        DigestJob(
            d,
            CronTrigger.from_crontab(d.schedule, timezone="UTC"),
            first_listing=bool(d.sink) and d.sink in sends_all,
        )
        for d in config.digests
    ]


def digest_event(digest: Digest, config: DigestConfig) -> dict[str, Any]:
    """The outbox payload for a rendered digest (type ``digest``)."""
    text = render_markdown(digest) if config.format == "markdown" else render_text(digest)
    key = f"{config.name}|{digest.since}|{digest.until}"
    return {
        "id": uuid.uuid5(_NAMESPACE, key).hex,
        "type": "digest",
        "name": config.name,
        "sink": config.sink,
        "title": f"{config.title}: {counts_line(digest)}",
        "text": text,
        "html": render_page(digest, title=config.title),
        "since": digest.since,
        "until": digest.until,
    }


def enqueue_scheduled_digest(
    store: Store, config: DigestConfig, now: datetime, *, first_listing: bool = False
) -> str | None:
    """Build the digest of ``[now - since, now)`` and enqueue it unless it is empty.

    Returns:
        The event id when a digest was enqueued (or was already), else None.
    """
    until = to_db(now)
    since = to_db(now - timedelta(seconds=config.since))
    digest = build_digest(
        Reader(store.db), since, until, list(config.sources) or None, first_listing=first_listing
    )
    if digest.empty:
        return None
    payload = digest_event(digest, config)
    enqueue_digest(store.db, payload)
    return str(payload["id"])
