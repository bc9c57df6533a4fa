"""Spend a request budget across sources by their learned rhythms, and plan each next poll.

Pure: no I/O and no clock of its own; the daemon (``aggregator.rhythm_sync``)
and the simulator (``benchmarks/schedule_sim.py``) drive the same ``Book`` and
``next_check``.

The allocation follows Cho & Garcia-Molina and Sia, Cho & Cho: to minimise the
mean delay from a change to its detection over all changes, with a fixed
number of requests, poll each source at a frequency proportional to the
square root of its rate of change, here hour by hour:
``f(t) = scale * sqrt(rate(t))``, bounded by ``1 / max_interval`` and
``1 / min_interval`` (and the publisher's floor). ``scale`` is solved so the
expected requests per day match the budget: ``requests_per_day`` if set, else
the configured ``interval`` of every learned source read as its average. The
next poll comes when the integral of ``f`` since this one reaches 1.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aggregator import schedule_policy as policy
from aggregator.rhythm import BURST_WINDOW, DAY, HOUR, Rhythm, Undo

#: Seconds between refreshes of the rhythms from the database, and of the allocation.
REFRESH_EVERY = 900.0
#: Rows younger than this are left to the next refresh (other nodes may not have
#: committed theirs yet); this node's own polls are counted in memory meanwhile.
REFRESH_LAG = 120.0
#: Seconds over which spending off the budget is corrected, and the memory of the sums
#: compared (``Book._account``).
SPEND_HORIZON = DAY / 2
SPEND_MEMORY = DAY / 4
#: The share of the budget aimed at, so the spend's noise stays within it.
BUDGET_MARGIN = 0.99
#: A learned wait grows at most this factor over the previous one (it may shrink at once).
GROWTH = 2.0
#: Policy names a source may be scheduled by.
POLICIES = ("learned", "adaptive", "fixed")


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One detected change, as the database (or the simulator) recorded it."""

    source: str
    kind: str  # new, changed, restored (others are not counted)
    detected: float
    published: float | None
    visit: object  # the fetch that saw it (rows with one visit are one observation)


@dataclass(frozen=True, slots=True)
class VisitRow:
    """Successful visits of one source in a span: how many, first and last."""

    source: str
    count: int
    first: float
    last: float


@dataclass(slots=True)
class Book:
    """The learned rhythms of many sources and the budget spread across them."""

    requests_per_day: float | None = None
    rhythms: dict[str, Rhythm] = field(default_factory=dict)
    bounds: dict[str, policy.Bounds] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    #: Polls per second per square root of an event per second (None: not allocated yet).
    scale: float | None = None
    local: dict[str, list[Undo]] = field(default_factory=dict)
    #: The shortest ``interval`` of the sources learned (``refresh_every``).
    shortest: float = REFRESH_EVERY
    #: Requests made and allowed (decayed over ``SPEND_HORIZON``), from the visits folded.
    spent: float = 0.0
    allowed: float = 0.0
    folded_upto: float | None = None
    #: Factor (1/2 to 2) on the budget that makes up for the allocation's model being off:
    #: the requests actually made (all nodes', as folded from the database) are the truth.
    correction: float = 1.0

    def add(self, name: str, bounds: policy.Bounds, since: float, *, fresh: bool = True) -> None:
        """Start (or keep) learning ``name``; ``fresh``: its whole history is after ``since``."""
        self.bounds[name] = bounds
        self.shortest = min(self.shortest, bounds.interval)
        if name not in self.rhythms:
            self.rhythms[name] = Rhythm(since=since, ref=since, visit_since=since, fresh=fresh)

    def drop(self, name: str) -> None:
        """Stop learning ``name`` (removed from the config)."""
        for table in (self.rhythms, self.bounds, self.floors, self.local):
            table.pop(name, None)  # ``shortest`` may stay lower: refreshes a little early

    def reset_shortest(self) -> None:
        """Recompute the shortest interval (after ``drop``s or longer intervals)."""
        self.shortest = min((b.interval for b in self.bounds.values()), default=REFRESH_EVERY)

    def refresh_every(self) -> float:
        """Seconds between refreshes: ``REFRESH_EVERY``, or 20 of the shortest interval if less.

        O(1): asked at every poll, so the shortest interval is kept by ``add``/``drop``.
        """
        return min(REFRESH_EVERY, max(1.0, 20 * self.shortest))

    def refresh_lag(self) -> float:
        """Seconds rows are left to settle before a refresh reads them (``REFRESH_LAG`` at most)."""
        return min(REFRESH_LAG, self.refresh_every() / 2)

    def budget(self) -> float:
        """Requests per second to spend across the learned sources.

        ``requests_per_day`` if set, else each source's ``interval`` read as the average
        interval of fixed polling at it (the daemon's jitter lengthens each by 5 %);
        ``BUDGET_MARGIN`` of that.
        """
        if self.requests_per_day:
            return BUDGET_MARGIN * self.requests_per_day / DAY
        average = sum(1.0 / (b.interval * (1 + policy.JITTER / 2)) for b in self.bounds.values())
        return BUDGET_MARGIN * average

    def target(self) -> float:
        """The budget times ``correction``: what ``allocate`` aims the expected spend at."""
        return self.budget() * self.correction

    # -- what was seen -----------------------------------------------------------

    def observe(self, name: str, at: float, dates: Iterable[float | None], edits: int) -> None:
        """Fold in one successful poll of this node (kept until the database gives it back)."""
        rhythm = self.rhythms.get(name)
        if rhythm is not None:
            self.local.setdefault(name, []).append(rhythm.observe(at, list(dates), edits))

    def hint(self, name: str, floor: float) -> None:
        """Remember the publisher's floor (seconds; 0 for none) for the allocation."""
        self.floors[name] = floor

    def refresh(
        self, changes: Iterable[ChangeRow], visits: Iterable[VisitRow], upto: float
    ) -> None:
        """Fold in rows recorded before ``upto`` by every node; drop local copies of them."""
        for name, undos in self.local.items():
            rhythm = self.rhythms.get(name)
            if rhythm is not None:
                for undo in undos:
                    if undo.at < upto:
                        rhythm.undo(undo)
            self.local[name] = [u for u in undos if u.at >= upto]
        visits = list(visits)
        for rhythm in self.rhythms.values():
            rhythm.advance(upto)  # once, not at every row folded
        self.fold(changes, visits)
        self._account(sum(v.count for v in visits if v.source in self.rhythms), upto)
        for rhythm in self.rhythms.values():
            rhythm.advance(upto)
            rhythm.reshape(upto)

    def fold(self, changes: Iterable[ChangeRow], visits: Iterable[VisitRow]) -> None:
        """Fold in rows (no settling of local counts, no accounting: see ``refresh``)."""
        groups: dict[tuple[str, object], list[ChangeRow]] = {}
        for row in sorted(changes, key=lambda r: r.detected):
            if row.source in self.rhythms and row.kind in ("new", "changed", "restored"):
                groups.setdefault((row.source, row.visit), []).append(row)
        for (name, _visit), rows in groups.items():
            dates = [r.published for r in rows if r.kind == "new"]
            edits = sum(r.kind != "new" for r in rows)
            self.rhythms[name].observe(rows[0].detected, dates, edits, visits=0)
        for v in visits:
            if (rhythm := self.rhythms.get(v.source)) is not None:
                rhythm.observe((v.first + v.last) / 2, visits=v.count)

    def _account(self, requests: int, upto: float) -> None:
        """Note ``requests`` made up to ``upto``; steer ``correction`` toward the budget.

        Spent and allowed requests are summed with a memory of ``SPEND_MEMORY``; the
        correction moves by their ratio to the power ``span / SPEND_HORIZON`` (integral
        control: a steady bias in the model is made up in full).
        """
        if self.folded_upto is not None and upto > self.folded_upto:
            span = upto - self.folded_upto
            q = math.exp(-span / SPEND_MEMORY)
            self.spent = self.spent * q + requests
            self.allowed = self.allowed * q + self.budget() * span
            if self.spent > 0 and self.allowed > 0:
                step = (self.allowed / self.spent) ** (span / SPEND_HORIZON)
                self.correction = min(2.0, max(0.5, self.correction * step))
        self.folded_upto = max(upto, self.folded_upto or upto)

    # -- allocation ---------------------------------------------------------------

    def prior(self, name: str) -> float:
        """The rate a source without history is taken to have: it is then polled at its interval."""
        interval = self.bounds[name].interval
        if not self.scale:
            return 1.0 / interval
        return 1.0 / (self.scale * interval) ** 2

    def allocate(self, now: float) -> float:
        """Solve ``scale`` so expected requests match the budget; returns it."""
        terms = [self._terms(name, now) for name in self.rhythms]
        self.scale = solve(lambda c: sum(t.spend(c) for t in terms), self.target(), self.scale)
        return self.scale

    def _terms(self, name: str, now: float) -> Term:
        """One source's expected spend by scale: shares of time at square roots of rates."""
        rhythm = self.rhythms[name]
        lo, hi = self._limits(name)
        rhythm.advance(now)
        rate = rhythm.rate(self.prior(name))
        rate *= rhythm.stale(now, rate)
        shape = rhythm.profile()
        day = (sum(math.sqrt(d) for d in shape.days) / 7) ** 2
        burst_share = shape.burst_share
        hours = shape.hours if len(set(shape.hours)) > 1 else (1.0,)
        parts = []
        for h in hours:
            base = rate * h * day
            parts.append(((1 - burst_share) / len(hours), math.sqrt(base)))
            if burst_share:
                parts.append((burst_share / len(hours), math.sqrt(base + shape.burst)))
        return Term.of(lo, hi, parts)

    def _limits(self, name: str) -> tuple[float, float]:
        b = self.bounds[name]
        longest_wait = max(b.min_interval, self.floors.get(name, 0.0))
        return 1.0 / b.max_interval, 1.0 / max(longest_wait, 1e-3)

    # -- planning ------------------------------------------------------------------

    def delay(self, name: str, now: float) -> tuple[float, str]:
        """Seconds until ``name`` should be polled next, and why (before floors and jitter)."""
        rhythm = self.rhythms[name]
        lo, hi = self._limits(name)
        rhythm.advance(now)
        mean = rhythm.rate(self.prior(name))
        stale = rhythm.stale(now, mean)
        shape = rhythm.profile()
        scale = self.scale
        if scale is None:  # before the first allocation: as if every source were this one
            scale = math.sqrt(1.0 / self.bounds[name].interval)
        burst_until = (rhythm.last_event or -math.inf) + BURST_WINDOW if shape.burst else -math.inf
        credit, t, limit = 0.0, now, now + self.bounds[name].max_interval
        while t < limit:
            bursting = t < burst_until
            edge = min(limit, (math.floor(t / HOUR) + 1) * HOUR, burst_until if bursting else limit)
            rate = mean * stale * shape.factor(t) + (shape.burst if bursting else 0.0)
            freq = min(hi, max(lo, scale * math.sqrt(rate)))
            if credit + freq * (edge - t) >= 1.0:
                t += (1.0 - credit) / freq
                break
            credit += freq * (edge - t)
            t = edge
        return min(t, limit) - now, _why(mean, stale, shape.factor(now), now < burst_until)


def _why(mean: float, stale: float, factor: float, bursting: bool) -> str:
    """``learned: 14/day (31/day at this hour), burst``."""
    text = f"learned: {_per_day(mean)}/day"
    if abs(factor - 1.0) > 0.05:
        text += f" ({_per_day(mean * factor * stale)}/day at this hour)"
    if stale < 1.0:
        text += ", quiet longer than expected"
    if bursting:
        text += ", burst"
    return text


def _per_day(rate: float) -> str:
    value = rate * DAY
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


@dataclass(frozen=True, slots=True)
class Term:
    """One source's expected spend as a function of ``scale``: shares of time at sqrt rates.

    ``spend(c) = sum(w * min(hi, max(lo, c * q)))``, in O(log n) from the sorted ``q``
    and running sums of ``w`` and ``w * q``.
    """

    lo: float
    hi: float
    q: tuple[float, ...]
    cum_w: tuple[float, ...]  # cum_w[i]: sum of w over the first i parts
    cum_wq: tuple[float, ...]

    @classmethod
    def of(cls, lo: float, hi: float, parts: list[tuple[float, float]]) -> Term:
        """The term of ``parts`` (share of time, sqrt rate), bounded by ``lo``/``hi``."""
        parts = sorted(parts, key=lambda p: p[1])
        cum_w, cum_wq = [0.0], [0.0]
        for w, q in parts:
            cum_w.append(cum_w[-1] + w)
            cum_wq.append(cum_wq[-1] + w * q)
        return cls(lo, hi, tuple(q for _, q in parts), tuple(cum_w), tuple(cum_wq))

    def spend(self, scale: float) -> float:
        """Expected requests per second at ``scale``."""
        total = self.cum_w[-1]
        if scale <= 0:
            return self.lo * total
        low = bisect.bisect_left(self.q, self.lo / scale)  # parts held at lo
        high = bisect.bisect_right(self.q, self.hi / scale)  # parts from here held at hi
        middle = scale * (self.cum_wq[high] - self.cum_wq[low])
        return self.lo * self.cum_w[low] + middle + self.hi * (total - self.cum_w[high])


def solve(spend: Callable[[float], float], target: float, guess: float | None = None) -> float:
    """The ``scale`` at which the non-decreasing ``spend(scale)`` meets ``target``.

    0 when even the lowest frequencies spend more; a large value when even the
    highest spend less. A bracket is found around ``guess`` (the last scale),
    then narrowed by regula falsi (Illinois).
    """
    if spend(0.0) >= target:
        return 0.0
    low, high = 0.0, 1.0
    if guess:
        low, high = guess / 1.25, guess * 1.25
        if spend(low) >= target:
            low, high = 0.0, low
    while spend(high) < target:
        low, high = high, high * 4
        if high > 1e12:
            return high
    f_low, f_high = spend(low) - target, spend(high) - target
    side = 0
    for _ in range(60):
        mid = high - f_high * (high - low) / (f_high - f_low) if f_high != f_low else high
        f_mid = spend(mid) - target
        if abs(f_mid) <= 1e-4 * target:
            return mid
        if f_mid > 0:
            high, f_high = mid, f_mid
            if side == 1:
                f_low /= 2
            side = 1
        else:
            low, f_low = mid, f_mid
            if side == -1:
                f_high /= 2
            side = -1
    return low


def next_check(
    kind: str,
    bounds: policy.Bounds,
    current: float | None,
    obs: policy.Observation,
    *,
    now: datetime,
    network_down: bool,
    rng: random.Random,
    learned: Callable[[], tuple[float, str]] | None = None,
) -> policy.Decision:
    """The next check of a source after a poll, for ``kind`` (a ``POLICIES`` name).

    The same for the daemon and the simulator: the policy's delay, the
    publisher's floor, jitter, then ``skipHours``/``skipDays``. ``learned``
    gives the learned delay and reason (``Book.delay`` for the source).
    """
    if kind == "fixed":
        bounds = policy.Bounds(**{**_fields(bounds), "adaptive": False})
    if kind != "learned" or learned is None or not obs.ok:
        decision = policy.decide(bounds, current, obs, network_down=network_down)
        if decision.gone:
            return decision
        delay = policy.jittered(decision.delay, rng)
    else:
        wait, reason = learned()
        if current and wait > GROWTH * current:
            wait = GROWTH * current  # a source found quieter slows down over a few polls
        wait = max(bounds.min_interval, wait)
        if obs.ended:
            wait, reason = bounds.max_interval, obs.ended
        floor, why = policy.publisher_floor(obs, bounds.interval)
        if floor > wait:
            wait, reason = floor, f"publisher asked ({why})"
        decision = policy.Decision(wait, wait, reason)
        delay = policy.jittered(wait, rng)
    delay = policy.skip_hours_delay(now, delay, obs.skip_hours, obs.skip_days)
    return policy.Decision(delay, decision.interval, decision.reason, decision.gone)


def _fields(bounds: policy.Bounds) -> dict[str, object]:
    return {name: getattr(bounds, name) for name in bounds.__slots__}  # type: ignore[attr-defined]


def epoch(moment: datetime) -> float:
    """``moment`` as epoch seconds (naive datetimes are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


__all__ = ["DAY", "POLICIES", "Book", "ChangeRow", "VisitRow", "epoch", "next_check", "solve"]
