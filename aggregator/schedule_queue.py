"""The daemon's queue of planned checks, driven by one APScheduler job.

Ten thousand sources do not need ten thousand APScheduler jobs: each plan is
a ``(due, token, name)`` tuple on a heap, and a single job (``sources``) whose
trigger is this queue fires whenever the earliest plan is due. The trigger
moves every due plan to ``ready`` while APScheduler asks it for the next fire
time, so the job only has to start those checks. Re-planning a source (or
forgetting it) bumps its token; stale heap entries are skipped when they
surface.
"""

from __future__ import annotations

import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

#: How far ahead the job is parked while nothing is planned (seconds).
IDLE = 86400.0
#: While started checks wait for the job (it could not run), look again this soon.
RETRY = 1.0


class DueQueue(BaseTrigger):
    """Planned checks by due time (UTC epoch seconds); also the job's trigger."""

    __slots__ = ("_counter", "_heap", "_tokens", "armed", "ready")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._tokens: dict[str, int] = {}
        self._counter = itertools.count()
        #: Names whose plan came due, waiting for the job to start their checks.
        self.ready: list[str] = []
        #: When the job runs next, as last told to APScheduler (the daemon re-arms
        #: the job when a plan comes due sooner).
        self.armed = float("inf")

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, name: object) -> bool:
        return name in self._tokens

    def plan(self, name: str, due: float) -> None:
        """Plan (or re-plan) the check of ``name`` at ``due``."""
        token = next(self._counter)
        self._tokens[name] = token
        heapq.heappush(self._heap, (due, token, name))

    def forget(self, name: str) -> None:
        """Drop the plan of ``name``, if any."""
        self._tokens.pop(name, None)

    def next_due(self) -> float | None:
        """The earliest live due time (stale entries on top are discarded)."""
        heap, tokens = self._heap, self._tokens
        while heap and tokens.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def take_due(self, now: float) -> None:
        """Move every plan due at ``now`` to ``ready``."""
        heap, tokens = self._heap, self._tokens
        while heap and heap[0][0] <= now:
            _due, token, name = heapq.heappop(heap)
            if tokens.get(name) == token:
                del tokens[name]
                self.ready.append(name)

    def pop_ready(self) -> list[str]:
        """The names whose checks should start now."""
        ready, self.ready = self.ready, []
        return ready

    def park(self, now: float) -> datetime:
        """The job's first run time: the earliest plan, or ``IDLE`` from ``now``."""
        due = self.next_due()
        self.armed = due if due is not None else now + IDLE
        return datetime.fromtimestamp(self.armed, UTC)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """APScheduler's question: when to fire next (moves what is due to ``ready``).

        The answer is always later than ``now`` (what is due now is in ``ready``,
        which the run being submitted consumes), so APScheduler never loops on it.
        """
        stamp = now.timestamp()
        self.take_due(stamp)
        due = self.next_due()
        at = due if due is not None else stamp + IDLE
        if self.ready:
            at = min(at, stamp + RETRY)
        self.armed = at
        return max(datetime.fromtimestamp(at, UTC), now + _TICK)

    def __str__(self) -> str:
        return f"due-queue[{len(self)} planned]"


_TICK = timedelta(microseconds=1)


def epoch_now() -> float:
    """Now, as the queue counts time."""
    return time.time()
