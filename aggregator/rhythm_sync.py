"""The daemon's learned schedule: one ``Book`` kept in step with the database.

Several daemon nodes may share one database, each polling its own sources, so
no rhythm lives only in one process. From the first learned check the ``Book``
is built, in the background and a piece at a time, from the history
(``HISTORY`` of ``changes`` with the entries' own dates, ``VISIT_HISTORY`` of
``fetches``); polls meanwhile are planned from what this node sees. Then every
``REFRESH_EVERY`` (or 20 of the shortest interval, if less) the rows recorded
since by every node are folded in, in the background, and the budget is spread
again. Between refreshes, this node's own polls are counted in memory; the
database's copy of them replaces that count at the next refresh. Rows younger
than ``REFRESH_LAG`` wait for the refresh after, so a node committing late is
not missed.

The choice of the next poll itself is ``aggregator.rhythm_plan.next_check``, the
function the simulator drives too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import structlog

from aggregator import rhythm_plan as plan
from aggregator import schedule_policy as policy
from aggregator.models import Hints
from aggregator.store import rhythm as history
from aggregator.store.thread import StoreThread
from aggregator.timeutil import from_db, now_db, to_db

log = structlog.get_logger("aggregator.rhythm")

DAY = plan.DAY
#: How far back the rhythms are read at start-up, in seconds.
HISTORY = 28 * plan.DAY
#: How far back visits are counted at start-up (for edits' rate), in seconds.
VISIT_HISTORY = 7 * plan.DAY


def ended(hints: Hints) -> str:
    """Why the publisher says a source will not change again (``Observation.ended``), or ""."""
    if hints.expired:
        return "JSON Feed expired"
    if hints.ends_at is not None and hints.ends_at <= now_db():
        return f"live blog coverage ended {hints.ends_at[:16]} UTC"
    return ""


def _epoch(text: str | None) -> float | None:
    return from_db(text).timestamp() if text else None


def _text(epoch: float) -> str:
    return to_db(datetime.fromtimestamp(epoch, UTC))


class RhythmSync:
    """The learned rhythms of the sources this daemon schedules by ``learned``."""

    def __init__(self, requests_per_day: float | None = None) -> None:
        self.book = plan.Book(requests_per_day=requests_per_day or None)
        self.names: dict[int, str] = {}
        self.watermark: float | None = None
        self._loading: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed = 0.0

    def configure(
        self,
        learned: dict[str, tuple[int, policy.Bounds]],
        others: list[float],
        requests_per_day: float,
    ) -> None:
        """Learn these sources; ``requests_per_day`` (0: none) less what the ``others``
        (the intervals of sources not learned) spend is the budget."""
        fixed = sum(DAY / interval for interval in others)
        budget = max(requests_per_day - fixed, len(learned)) if requests_per_day else None
        self.book.requests_per_day = budget
        self.sources(learned)

    def sources(self, learned: dict[str, tuple[int, policy.Bounds]]) -> None:
        """Learn exactly these sources (name -> (source id, bounds)); forget the others."""
        for name in set(self.book.rhythms) - set(learned):
            self.book.drop(name)
        now = time.time()
        for name, (source_id, bounds) in learned.items():
            self.names[source_id] = name
            self.book.add(name, bounds, now)
        self.book.reset_shortest()

    async def ready(self, store: StoreThread) -> None:
        """Start loading the history (once), and a refresh when one is due.

        Polls do not wait for the load: until it is done, sources are planned from
        what this node saw (a cold start, near their interval).
        """
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load(store))
        if not self._loading.done():
            return
        due = time.time() - self._refreshed >= self.book.refresh_every()
        if due and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(store))

    async def loaded(self) -> None:
        """Wait until the history has been loaded (or its load failed)."""
        if self._loading is not None:
            await asyncio.shield(self._loading)

    async def _load(self, store: StoreThread) -> None:
        """Read the history a piece at a time, yielding to polls between pieces."""
        now = time.time()
        upto = now - self.book.refresh_lag()
        try:
            await self._starts(store, now)
            db = store.store.db
            visits = await store.call(
                history.visits_between, db, _text(now - VISIT_HISTORY), _text(upto)
            )
            async for rows in self._pages(store, now - HISTORY, upto):
                self.book.fold(self._changes(rows, upto), [])
            self.book.fold([], self._visits(visits, upto))
        except Exception as exc:  # start cold rather than stop polling; refreshes go on
            log.exception("rhythm.load_failed", error=str(exc), kept="rates learned from now on")
        self.watermark, self._refreshed = upto, time.time()
        self.book.allocate(time.time())
        took = round(time.time() - now, 2)
        log.debug("rhythm.loaded", sources=len(self.book.rhythms), seconds=took)

    async def _pages(
        self, store: StoreThread, start: float, upto: float
    ) -> AsyncIterator[list[history.ChangeRecord]]:
        """Pages of the changes recorded in ``[start, upto)``, yielding to polls between."""
        after = None
        while True:
            rows = await store.call(
                history.changes_between, store.store.db, _text(start), _text(upto), after
            )
            if rows:
                yield rows
            if len(rows) < history.PAGE:
                return
            after = rows[-1].key
            await asyncio.sleep(0)

    async def _starts(self, store: StoreThread, now: float) -> None:
        """Set each known source's history start from when it was added."""
        for start in await store.call(history.source_starts, store.store.db):
            name = self.names.get(start.source_id)
            added = _epoch(start.added_at)
            if name is None or added is None or name not in self.book.rhythms:
                continue
            rhythm = self.book.rhythms[name]
            rhythm.since = max(added, now - HISTORY)
            rhythm.visit_since = max(rhythm.since, now - VISIT_HISTORY)
            rhythm.fresh = rhythm.fresh and added >= now - HISTORY

    def _changes(self, rows: list[history.ChangeRecord], upto: float) -> list[plan.ChangeRow]:
        names = self.names
        return [
            plan.ChangeRow(names[c.source_id], c.kind, _epoch(c.detected_at) or upto,
                           _epoch(c.published_at), c.fetch_id)
            for c in rows if c.source_id in names
        ]  # fmt: skip

    def _visits(self, rows: list[history.VisitRecord], upto: float) -> list[plan.VisitRow]:
        names = self.names
        return [
            plan.VisitRow(names[v.source_id], v.count, _epoch(v.first_at) or upto,
                          _epoch(v.last_at) or upto)
            for v in rows if v.source_id in names
        ]  # fmt: skip

    async def _refresh(self, store: StoreThread) -> None:
        """Fold in the rows every node recorded since the last refresh; spread the budget."""
        assert self.watermark is not None
        upto = time.time() - self.book.refresh_lag()
        db, since, end = store.store.db, _text(self.watermark), _text(upto)
        try:
            changes = [r async for rows in self._pages(store, self.watermark, upto) for r in rows]
            visits = await store.call(history.visits_between, db, since, end)
            self.book.refresh(self._changes(changes, upto), self._visits(visits, upto), upto)
        except Exception as exc:  # the next refresh tries again; polling goes on
            log.exception("rhythm.refresh_failed", error=str(exc))
            return
        self.watermark, self._refreshed = upto, time.time()
        self.book.allocate(time.time())
        log.debug("rhythm.refreshed", changes=len(changes), visits=len(visits),
                  scale=self.book.scale, correction=round(self.book.correction, 3))  # fmt: skip

    def next_check(
        self,
        kind: str,
        name: str,
        bounds: policy.Bounds,
        current: float | None,
        obs: policy.Observation,
        *,
        started: float,
        new_dates: tuple[str | None, ...],
        edits: int,
        network_down: bool,
        rng: random.Random,
    ) -> policy.Decision:
        """Count this node's poll of ``name`` (begun at ``started``), then plan the next."""
        learned = kind == "learned" and name in self.book.rhythms
        if learned and obs.ok:
            self.book.observe(name, started, [_epoch(d) for d in new_dates], edits)
            self.book.hint(name, policy.publisher_floor(obs, bounds.interval)[0])
        now = time.time()
        return plan.next_check(
            kind, bounds, current, obs,
            now=datetime.fromtimestamp(now, UTC), network_down=network_down, rng=rng,
            learned=(lambda: self.book.delay(name, now)) if learned else None,
        )  # fmt: skip
