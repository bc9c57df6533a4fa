"""Each source's rate of change, learned from what was seen: pure, no I/O, no clock of its own.

A ``Rhythm`` keeps a few decayed counts per source (an observation's weight halves
in about ten days, ``TAU``), so it is updated in O(1) after each poll and folded
from the database in chunks, and an observation can be taken back exactly
(``undo``) when the database's own copy of it arrives:

* **New entries** are counted exactly; each is placed in time by its own date
  (``published``) where the feed gives one no later than its detection, else at
  its detection. Their rate is a Gamma posterior: ``(news + 1) / (exposure +
  1 / prior)``, where the prior is the source's configured ``interval`` as the
  allocator reads it (one pseudo-event), so a new source starts from there.
* **Edits** have no date and several edits of one entry between two visits look
  like one, so their rate is Cho & Garcia-Molina's estimator for "changed or not
  at each visit": ``-ln((n - X + 0.5) / (n + 0.5)) / I`` for ``n`` visits ``I``
  apart of which ``X`` saw an edit (times the edits per such visit).
* **Hour of day and day of week** (UTC): events per bin over the time observed
  in that bin, each bin pulled toward the mean by ``BIN_PRIOR`` pseudo-events, so
  a profile shows only once there is enough history.
* **Bursts**: pairs of events less than ``BURST_WINDOW`` apart, beyond what the
  hourly profile explains, give the extra rate ``burst`` during the window after
  each event (live stories come in bursts).
* **Staleness**: when the profile expected ``STALE_EVENTS`` or more events since
  the last one and none came, the rate is scaled down by that ratio, so a source
  that stopped is polled less well before its history decays.

Times are epoch seconds (UTC); the caller passes the time it is.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
#: Mean life of an observation's weight, in seconds (half-life about 9.7 days).
TAU = 14 * DAY
#: Pseudo-events of the prior rate (the configured interval) in the posterior.
PRIOR_EVENTS = 1.0
#: Pseudo-events pulling each hour-of-day or day-of-week bin toward the mean.
BIN_PRIOR = 3.0
#: How long after an event the burst rate applies, in seconds.
BURST_WINDOW = HOUR
#: Events the profile must have expected since the last one before the rate is cut.
STALE_EVENTS = 4.0
#: A cached profile is made again after this long (seconds) even without a new event,
#: and after this long if an event came since.
RESHAPE_AFTER = 6 * HOUR
RESHAPE_AFTER_EVENT = 300.0
#: A published date this far past its detection is taken as the detection time.
CLOCK_SKEW = 300.0


def _decay(age: float) -> float:
    return math.exp(-max(age, 0.0) / TAU)


def _exposure(start: float, end: float) -> float:
    """Decayed seconds observed from ``start`` to ``end`` (weights relative to ``end``)."""
    return TAU * (1.0 - _decay(end - start)) if end > start else 0.0


def bin_exposure(start: float, end: float, width: float, bins: int) -> list[float]:
    """Decayed seconds observed in each periodic bin (``width`` s, ``bins`` per period).

    Weights are relative to ``end``. Whole periods are summed as a geometric series,
    so the cost is O(bins) however long the span.
    """
    out = [0.0] * bins
    if end <= start:
        return out
    period = width * bins
    whole = int((end - start) // period)
    recent = _last_period(end, width, bins) if whole else None
    if recent is not None:
        q = _decay(period)
        series = (1 - q**whole) / (1 - q)
        out = [x * series for x in recent]
    tail = _pieces(start, end - whole * period, end, width, bins)
    return [a + b for a, b in zip(out, tail, strict=True)]


@functools.lru_cache(maxsize=64)
def _last_period(end: float, width: float, bins: int) -> tuple[float, ...]:
    """``_pieces`` of the period ending at ``end`` (shared by every source at one ``ref``)."""
    return tuple(_pieces(end - width * bins, end, end, width, bins))


def _pieces(start: float, stop: float, ref: float, width: float, bins: int) -> list[float]:
    """Decayed seconds of ``[start, stop]`` (less than one period) in each bin."""
    out = [0.0] * bins
    t = start
    while t < stop:
        edge = min(stop, (math.floor(t / width) + 1) * width)
        out[int(t // width) % bins] += TAU * (_decay(ref - edge) - _decay(ref - t))
        t = edge
    return out


def hour_of(t: float) -> int:
    """The UTC hour (0-23) of epoch ``t``."""
    return int(t // HOUR) % 24


def day_of(t: float) -> int:
    """The day of the week of epoch ``t`` (0 = Thursday, as 1970-01-01 was)."""
    return int(t // DAY) % 7


@dataclass(frozen=True, slots=True)
class Profile:
    """A source's rate shape: factors (mean 1) by UTC hour and by day of week."""

    hours: tuple[float, ...] = (1.0,) * 24
    days: tuple[float, ...] = (1.0,) * 7
    #: Extra events per second in the ``BURST_WINDOW`` after an event.
    burst: float = 0.0
    #: Share of the time within ``BURST_WINDOW`` after some event.
    burst_share: float = 0.0

    def factor(self, t: float) -> float:
        """The rate at ``t`` relative to the mean."""
        return self.hours[hour_of(t)] * self.days[day_of(t)]

    #: ``running[h]``: the hour factors of the hours before ``h``, in seconds (25 values).
    running: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.running:
            running = tuple(itertools.accumulate((h * HOUR for h in self.hours), initial=0.0))
            object.__setattr__(self, "running", running)

    def expected(self, start: float, end: float, rate: float) -> float:
        """Events expected from ``start`` to ``end`` at mean ``rate``, by the profile.

        Day by day, each from the running sum of the hour factors, so the cost does
        not grow with the hours in between (past a week: the mean rate).
        """
        stop = min(end, start + WEEK)
        total, t = 0.0, start
        while t < stop:
            day_start = math.floor(t / DAY) * DAY
            edge = min(stop, day_start + DAY)
            within = self._since_midnight(edge - day_start) - self._since_midnight(t - day_start)
            total += self.days[day_of(t)] * within
            t = edge
        return rate * (total + max(0.0, end - stop))

    def _since_midnight(self, into: float) -> float:
        """The hour factors summed over the first ``into`` seconds (0 to a day) of a day."""
        hour = min(int(into // HOUR), 23)
        return self.running[hour] + self.hours[hour] * (into - hour * HOUR)


FLAT = Profile()


@dataclass(frozen=True, slots=True)
class Undo:
    """What one ``observe`` added, so ``Rhythm.undo`` can take it back exactly."""

    at: float
    weight_ref: float  # the ``ref`` the weights below are relative to
    news: float
    edits: float
    edit_visits: float
    visits: float
    pairs: float
    covered: float
    bins: tuple[tuple[int, int, float], ...]  # (hour, day, weight)
    times: tuple[float, ...] = ()


@dataclass(slots=True)
class Rhythm:
    """What is known of one source's rhythm of change (decayed counts to time ``ref``)."""

    since: float
    ref: float
    visit_since: float = 0.0  # when the visits counted start (may be after ``since``)
    news: float = 0.0
    edits: float = 0.0
    visits: float = 0.0
    edit_visits: float = 0.0
    pairs: float = 0.0
    covered: float = 0.0  # decayed seconds within ``BURST_WINDOW`` after some event
    last_event: float | None = None
    hours: array | None = None  # event weight per UTC hour (None until an event)
    days: array | None = None
    recent: list[float] = field(default_factory=list)  # event times in the last window
    #: True while the source's whole history is in view and its first visit is to come.
    fresh: bool = True
    _profile: Profile | None = None
    _profiled_at: float = 0.0
    _events_since_profile: bool = False

    # -- updates ---------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Move the decay reference to ``now`` (counts lose weight with age)."""
        if now <= self.ref:
            return
        q = _decay(now - self.ref)
        self.news *= q
        self.edits *= q
        self.visits *= q
        self.edit_visits *= q
        self.pairs *= q
        self.covered *= q
        for bins in (self.hours, self.days):
            if bins is not None:
                for i in range(len(bins)):
                    bins[i] *= q
        self.ref = now

    def observe(
        self,
        at: float,
        dates: Sequence[float | None] = (),
        edits: int = 0,
        visits: int = 1,
        edit_visits: int | None = None,
    ) -> Undo:
        """Fold in what polls at ``at`` saw: new entries' dates, edits, visits.

        Args:
            at: when the poll happened (or the middle of a folded chunk).
            dates: one item per new entry: its own date, or None if undated.
            edits: entries edited since the previous visit.
            visits: successful visits these counts cover.
            edit_visits: of those, visits that saw an edit (default: one if ``edits``).
        """
        self.advance(at)
        if edit_visits is None:
            edit_visits = 1 if edits else 0
        placed = [self._placed(d, at) for d in dates]
        if self.fresh:
            self._backlog(placed, at)
        news = sorted(t for t in placed if t >= self.since - CLOCK_SKEW)
        times = sorted([*news, *([at] * edits)])
        bins, pairs, covered = [], 0.0, 0.0
        for t in times:
            w = _decay(self.ref - t)
            count, cover = self._pair(t)
            pairs += w * count
            covered += w * cover
            bins.append((hour_of(t), day_of(t), w))
        weight = sum(_decay(self.ref - t) for t in news)
        undo = Undo(at, self.ref, weight, float(edits), float(edit_visits), float(visits),
                    pairs, covered, tuple(bins), tuple(times))  # fmt: skip
        self._apply(undo, 1.0)
        return undo

    def _backlog(self, placed: list[float], at: float) -> None:
        """First visit: the entries' own dates extend the history back (cold start).

        The oldest fifth of the dated entries is left out, so one old item kept in
        a feed does not stretch the span.
        """
        self.fresh = False
        older = sorted((t for t in placed if t < at), reverse=True)
        if older:
            keep = older[: max(1, math.ceil(0.8 * len(older)))]
            self.since = min(self.since, keep[-1])

    def undo(self, undo: Undo) -> None:
        """Take back an ``observe`` (its rows were read back from the database)."""
        self._apply(undo, -1.0)
        for t in undo.times:
            with contextlib.suppress(ValueError):
                self.recent.remove(t)

    def _apply(self, u: Undo, sign: float) -> None:
        w = sign * _decay(self.ref - u.weight_ref)
        self.news = max(0.0, self.news + w * u.news)
        self.edits = max(0.0, self.edits + w * u.edits)
        self.visits = max(0.0, self.visits + w * u.visits)
        self.edit_visits = max(0.0, self.edit_visits + w * u.edit_visits)
        self.pairs = max(0.0, self.pairs + w * u.pairs)
        self.covered = max(0.0, self.covered + w * u.covered)
        if u.bins:
            self._events_since_profile = True
        if u.bins and self.hours is None:
            self.hours, self.days = array("d", [0.0] * 24), array("d", [0.0] * 7)
        for hour, day, weight in u.bins:
            assert self.hours is not None and self.days is not None
            self.hours[hour] = max(0.0, self.hours[hour] + w * weight)
            self.days[day] = max(0.0, self.days[day] + w * weight)

    def _placed(self, date: float | None, detected: float) -> float:
        """An event's time: its own date when plausible, else its detection."""
        if date is None or date > detected + CLOCK_SKEW:
            return detected
        return min(date, detected)

    def _pair(self, t: float) -> tuple[int, float]:
        """Note an event at ``t``: the earlier events less than ``BURST_WINDOW`` before it,
        and the seconds of burst window it adds (up to the window, less any overlap)."""
        if self.last_event is None or t > self.last_event:
            self.last_event = t
        self.recent = [r for r in self.recent if r >= t - BURST_WINDOW]
        before = [r for r in self.recent if r < t]
        self.recent.append(t)
        cover = min(BURST_WINDOW, t - max(before)) if before else BURST_WINDOW
        return len(before), cover

    # -- estimates ---------------------------------------------------------------

    def exposure(self) -> float:
        """Decayed seconds this source has been observed."""
        return _exposure(self.since, self.ref)

    def edit_rate(self) -> float:
        """Edits per second (Cho & Garcia-Molina's estimator over the visits)."""
        n, x = self.visits, min(self.edit_visits, self.visits)
        if x <= 0 or n <= 0:
            return 0.0
        spacing = _exposure(max(self.visit_since, self.since), self.ref) / n
        if spacing <= 0:
            return 0.0
        changed = -math.log((n - x + 0.5) / (n + 0.5)) / spacing
        return changed * self.edits / x

    def rate(self, prior: float) -> float:
        """Mean events per second: new entries (Gamma posterior on ``prior``) plus edits."""
        news = (self.news + PRIOR_EVENTS) / (self.exposure() + PRIOR_EVENTS / prior)
        return news + self.edit_rate()

    def reshape(self, now: float) -> None:
        """Forget the cached profile if made more than ``RESHAPE_AFTER`` before ``now``."""
        if now - self._profiled_at > RESHAPE_AFTER:
            self._profile = None

    def profile(self) -> Profile:
        """The hour-of-day and day-of-week shape, and the burst rate (made again when
        ``RESHAPE_AFTER`` old: a shape moves slowly, and one event hardly moves it)."""
        age = self.ref - self._profiled_at
        moved = self._events_since_profile and age > RESHAPE_AFTER_EVENT
        if self._profile is None or moved or age > RESHAPE_AFTER:
            self._profile = self._shape() if self.hours is not None else FLAT
            self._profiled_at, self._events_since_profile = self.ref, False
        return self._profile

    def _shape(self) -> Profile:
        assert self.hours is not None and self.days is not None
        events = sum(self.hours)
        exposure = self.exposure()
        if events <= 0 or exposure <= 0:
            return FLAT
        mean = events / exposure
        hour_exp = bin_exposure(self.since, self.ref, HOUR, 24)
        day_exp = bin_exposure(self.since, self.ref, DAY, 7)
        hours = _shrunk(self.hours, hour_exp, mean)
        hours = _normal([(hours[i - 1] + 2 * hours[i] + hours[(i + 1) % 24]) / 4 for i in _H])
        days = _normal(_shrunk(self.days, day_exp, mean))
        expected = BURST_WINDOW * mean * sum(h * w for h, w in zip(hours, self.hours, strict=True))
        burst = max(0.0, self.pairs - expected) / ((events + BIN_PRIOR) * BURST_WINDOW)
        share = min(1.0, self.covered / exposure) if burst else 0.0
        return Profile(tuple(hours), tuple(days), burst, share)

    def stale(self, now: float, rate: float) -> float:
        """Factor (at most 1) cutting ``rate`` when the expected events did not come."""
        if self.last_event is None or now <= self.last_event:
            return 1.0
        expected = self.profile().expected(self.last_event, now, rate)
        return min(1.0, STALE_EVENTS / expected) if expected > 0 else 1.0


_H = range(24)


def _shrunk(counts: Iterable[float], exposure: list[float], mean: float) -> list[float]:
    """Per-bin rate over the mean, each bin pulled toward 1 by ``BIN_PRIOR`` pseudo-events."""
    return [(c + BIN_PRIOR) / (e * mean + BIN_PRIOR) for c, e in zip(counts, exposure, strict=True)]


def _normal(values: list[float]) -> list[float]:
    """``values`` scaled to mean 1."""
    mean = sum(values) / len(values)
    return [v / mean for v in values] if mean > 0 else [1.0] * len(values)
