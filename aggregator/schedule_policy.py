"""When to poll each source next: pure functions, no I/O, no clock of their own.

The daemon (``aggregator.scheduler``) feeds these functions what a poll said
and the time it is; they answer with the delay until the next check and why.
Rules, in order:

* 410 Gone stops polling the source (``Decision.gone``).
* While our own network is down (``NetworkMonitor``), a failure is retried
  after ``network_retry`` and does not grow the source's backoff.
* Any other failure backs off exponentially: ``interval * 2**(failures-1)``,
  capped at ``max_backoff``; a ``Retry-After`` longer than that wins.
* A success resets the backoff. With ``adaptive`` on, the interval halves
  after a poll that found changes (down to ``min_interval``) and grows by a
  quarter after a quiet one (up to ``max_interval``).
* The publisher's floor always wins over our interval: ``Cache-Control:
  max-age``/``Expires``, RSS ``<ttl>`` and ``Retry-After`` (each capped at
  ``HINT_CAP`` against nonsense values); so do RSS ``<sy:updatePeriod>`` /
  ``<sy:updateFrequency>``, up to the source's ``interval``. RSS
  ``<skipHours>``/``<skipDays>`` push the check out of skipped UTC hours and days.
* A feed that says it will not change again (a live blog past its
  ``coverageEndTime``, a JSON Feed with ``expired: true``) is checked at
  ``max_interval``.
* Jitter only ever lengthens a delay (0-10 %), so no floor is undercut.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Publisher hints longer than this are treated as this (a week).
HINT_CAP = 7 * 86400.0
#: Jitter added on top of every delay, as a fraction of it.
JITTER = 0.10
SPEED_UP = 0.5
SLOW_DOWN = 1.25


@dataclass(frozen=True, slots=True)
class Bounds:
    """One source's configured timing, in seconds."""

    interval: float
    min_interval: float
    max_interval: float
    adaptive: bool = True
    max_backoff: float = 86400.0
    network_retry: float = 60.0


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll told us about a source."""

    ok: bool
    changed: bool = False
    status: int | None = None
    transport_error: bool = False  # no HTTP response at all (DNS, connect, timeout)
    retry_after: float | None = None
    max_age: float | None = None  # Cache-Control max-age or Expires, seconds
    ttl: float | None = None  # RSS <ttl>, seconds
    skip_hours: frozenset[int] = frozenset()
    failures: int = 0  # consecutive failures including this poll
    skip_days: frozenset[int] = frozenset()  # RSS <skipDays>, 0 = Monday (UTC)
    update_period: float | None = None  # RSS sy:updatePeriod / sy:updateFrequency, seconds
    ended: str = ""  # why the publisher says it will not change again ("" if it may)


@dataclass(frozen=True, slots=True)
class Decision:
    """When to check next and why."""

    delay: float
    interval: float  # the adaptive interval to remember
    reason: str
    gone: bool = False


def default_bounds(
    interval: float,
    min_interval: float | None = None,
    max_interval: float | None = None,
    **kwargs: object,
) -> Bounds:
    """Bounds with defaults: min ``max(60s, interval/3)`` (at most ``interval``), max ``8 x``."""
    low = min_interval if min_interval is not None else min(interval, max(60.0, interval / 3))
    high = max_interval if max_interval is not None else interval * 8
    return Bounds(interval, min(low, interval), max(high, interval), **kwargs)  # type: ignore[arg-type]


def learned_bounds(
    interval: float,
    min_interval: float | None = None,
    max_interval: float | None = None,
    **kwargs: object,
) -> Bounds:
    """Bounds for the learned schedule: min ``max(60s, interval/10)`` (at most ``interval``),
    max ``24 x``. Wider than ``default_bounds``: the budget, not the bounds, keeps the
    average at ``interval``."""
    low = min_interval if min_interval is not None else min(interval, max(60.0, interval / 10))
    high = max_interval if max_interval is not None else interval * 24
    return Bounds(interval, min(low, interval), max(high, interval), **kwargs)  # type: ignore[arg-type]


#: Seconds of start-up window per source being planned (so a handful of sources start at
#: once, and thousands are spread over the whole ``startup_spread``).
STARTUP_PER_SOURCE = 0.5


def startup_window(spread: float, sources: int) -> float:
    """The window over which ``sources`` overdue or new sources are spread at start-up."""
    return min(spread, max(1.0, sources * STARTUP_PER_SOURCE))


def initial_delay(
    *,
    now: datetime,
    bounds: Bounds,
    next_check_at: datetime | None,
    last_fetch_at: datetime | None,
    spread: float,
    rng: random.Random,
) -> float:
    """Seconds until a source's first check after start-up (or after being added).

    A stored ``next_check_at`` in the future is kept. Sources overdue or never
    polled are spread uniformly over ``min(interval, spread)``, and never
    checked sooner than ``min_interval`` after their last fetch.
    """
    if next_check_at is not None and next_check_at > now:
        return (next_check_at - now).total_seconds()
    delay = rng.uniform(0, min(bounds.interval, spread))
    if last_fetch_at is not None:
        floor = (last_fetch_at - now).total_seconds() + bounds.min_interval
        delay = max(delay, floor)
    return max(0.0, delay)


def backoff(bounds: Bounds, failures: int) -> float:
    """The wait after ``failures`` consecutive failures (before jitter)."""
    exponent = min(max(failures - 1, 0), 30)
    return max(bounds.interval, min(bounds.max_backoff, bounds.interval * 2**exponent))


def publisher_floor(obs: Observation, interval: float | None = None) -> tuple[float, str]:
    """The longest wait the publisher asked for, and which hint asked.

    ``sy:updatePeriod`` only says how often the feed is updated, and CMSs send a
    default whatever the site does (WordPress: hourly), so it is capped at the
    source's ``interval`` when given: it stops speed-ups below the announced
    period, but never slows a source below the interval its user chose.
    """
    period = obs.update_period
    if period is not None and interval is not None:
        period = min(period, interval)
    hints = [
        (obs.retry_after, "Retry-After"),
        (obs.max_age, "Cache-Control/Expires"),
        (obs.ttl, "RSS ttl"),
        (period, "sy:updatePeriod"),
    ]
    best, why = 0.0, ""
    for value, name in hints:
        if value is not None and value > best:
            best, why = min(value, HINT_CAP), name
    return best, why


def decide(
    bounds: Bounds, current: float | None, obs: Observation, *, network_down: bool
) -> Decision:
    """The next check for a source after a poll (delay before jitter and skipHours)."""
    current = current or bounds.interval
    if not obs.ok:
        return _after_failure(bounds, current, obs, network_down=network_down)
    interval, reason = _adapt(bounds, current, obs.changed)
    if obs.ended:
        interval, reason = bounds.max_interval, obs.ended
    floor, why = publisher_floor(obs, bounds.interval)
    if floor > interval:
        return Decision(floor, interval, f"publisher asked ({why})")
    return Decision(interval, interval, reason)


def _adapt(bounds: Bounds, current: float, changed: bool) -> tuple[float, str]:
    if not bounds.adaptive:
        return bounds.interval, "interval"
    if changed:
        return max(bounds.min_interval, current * SPEED_UP), "active"
    slower = min(bounds.max_interval, max(bounds.min_interval, current * SLOW_DOWN))
    return slower, "quiet" if slower > bounds.interval else "interval"


def _after_failure(
    bounds: Bounds, current: float, obs: Observation, *, network_down: bool
) -> Decision:
    if obs.status == 410:
        return Decision(0.0, current, "gone (HTTP 410)", gone=True)
    if network_down and obs.transport_error:
        return Decision(max(bounds.network_retry, bounds.min_interval), current, "network down")
    wait = backoff(bounds, obs.failures)
    reason = f"backoff after {obs.failures} failure{'s' if obs.failures != 1 else ''}"
    if obs.retry_after is not None and min(obs.retry_after, HINT_CAP) > wait:
        wait, reason = min(obs.retry_after, HINT_CAP), f"Retry-After (HTTP {obs.status})"
    return Decision(wait, current, reason)


#: How ``fetch.http.describe_httpx_error`` and the fetch deadline start their reasons
#: when no HTTP response arrived at all.
TRANSPORT_PREFIXES = (
    "cannot resolve host",
    "connection",
    "timed out",
    "read timed out",
    "write timed out",
    "server broke the HTTP protocol",
)


def is_transport_error(status: int | None, error: str | None) -> bool:
    """True for a failure with no HTTP response (DNS, refused, reset, timeout)."""
    return status is None and bool(error) and str(error).startswith(TRANSPORT_PREFIXES)


def jittered(delay: float, rng: random.Random) -> float:
    """``delay`` lengthened by 0-10 % so sources sharing an interval drift apart."""
    return delay * (1 + rng.uniform(0, JITTER))


def skip_hours_delay(
    now: datetime,
    delay: float,
    skip_hours: frozenset[int],
    skip_days: frozenset[int] = frozenset(),
) -> float:
    """Push a check that would land in a skipped UTC hour or day to the next allowed hour.

    ``skip_days`` are weekdays, 0 = Monday. Skipping every hour or every day is
    ignored (the feed would never be read).
    """
    hours = skip_hours if len(skip_hours) < 24 else frozenset()
    days = skip_days if len(skip_days) < 7 else frozenset()
    if not hours and not days:
        return delay
    when = now + timedelta(seconds=delay)
    for _ in range(24 * 7):
        if when.hour not in hours and when.weekday() not in days:
            break
        when = (when + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return (when - now).total_seconds()


@dataclass
class NetworkMonitor:
    """Tells our own network failing apart from publishers failing.

    The network counts as down when, since the last successful response from
    any host, transport errors (no HTTP response at all) came from at least
    ``min_hosts`` different hosts within ``window`` seconds. While down, one
    poll every ``probe_interval`` seconds is let through as a probe; the rest
    wait without a fetch, so no source is charged for our outage.
    """

    min_hosts: int = 3
    window: float = 120.0
    probe_interval: float = 30.0
    _failures: deque[tuple[float, str]] = field(default_factory=deque)
    _last_probe: float = float("-inf")

    def record(self, now: float, host: str, *, ok: bool, transport_error: bool) -> None:
        """Note a poll's outcome (``now`` in monotonic seconds)."""
        if ok or not transport_error:  # any HTTP answer proves the network works
            self._failures.clear()
            return
        self._failures.append((now, host))

    def is_down(self, now: float) -> bool:
        """True when recent transport errors span enough hosts to blame our side."""
        while self._failures and self._failures[0][0] < now - self.window:
            self._failures.popleft()
        return len({host for _, host in self._failures}) >= self.min_hosts

    def take_probe(self, now: float) -> bool:
        """While down: True at most once per ``probe_interval`` (that poll is the probe)."""
        if now - self._last_probe >= self.probe_interval:
            self._last_probe = now
            return True
        return False
