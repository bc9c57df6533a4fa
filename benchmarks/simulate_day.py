"""Simulate one day of polling with the real scheduling policy (no network, no clock).

Prints requests per source per hour in each period, for a few kinds of source:

    python benchmarks/simulate_day.py
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aggregator import schedule_policy as p

DAY = 86400.0
START = datetime(2026, 3, 10, tzinfo=UTC)
ACTIVE = (8 * 3600.0, 12 * 3600.0)  # a story breaks at 08:00 and settles at 12:00


def story_changes(t: float, last: float) -> bool:
    """True when the publisher changed something between ``last`` and ``t``."""
    if ACTIVE[0] <= t < ACTIVE[1]:
        return True  # live: an update every couple of minutes
    return int(t // 7200) != int(last // 7200)  # otherwise one item every two hours


def simulate(
    bounds: p.Bounds,
    observe: Callable[[float, float, int], p.Observation],
    seed: int = 1,
) -> list[float]:
    """Poll times over one day; ``observe(t, last_poll, failures)`` says what a poll saw."""
    rng = random.Random(seed)
    t = rng.uniform(0, bounds.interval)
    last, current, failures, times = 0.0, bounds.interval, 0, []
    while t < DAY:
        times.append(t)
        obs = observe(t, last, failures + 1)
        failures = 0 if obs.ok else failures + 1
        decision = p.decide(bounds, current, obs, network_down=False)
        if decision.gone:
            break
        current = decision.interval
        delay = p.jittered(decision.delay, rng)
        delay = p.skip_hours_delay(START + timedelta(seconds=t), delay, obs.skip_hours)
        last, t = t, t + delay
    return times


def per_hour(times: list[float], start: float, end: float) -> float:
    return sum(start <= x < end for x in times) / ((end - start) / 3600)


def feed(**extra: object) -> Callable[[float, float, int], p.Observation]:
    """A working feed following the story, plus publisher hints ``extra``."""
    return lambda t, last, _f: p.Observation(ok=True, changed=story_changes(t, last), **extra)  # type: ignore[arg-type]


def failing(
    start: float, end: float, **extra: object
) -> Callable[[float, float, int], p.Observation]:
    """A quiet feed that fails between ``start`` and ``end`` seconds."""

    def observe(t: float, _last: float, failures: int) -> p.Observation:
        if start <= t < end:
            return p.Observation(ok=False, failures=failures, **extra)  # type: ignore[arg-type]
        return p.Observation(ok=True)

    return observe


def main() -> None:
    bounds = p.default_bounds(900.0)  # interval 15m: min 5m, max 2h
    fixed = p.default_bounds(900.0, adaptive=False)
    story = {
        "adaptive feed (15m)": (bounds, feed()),
        "fixed interval (15m, adaptive=false)": (fixed, feed()),
        "adaptive, Cache-Control max-age=1800": (bounds, feed(max_age=1800)),
        "adaptive, RSS ttl=60, skipHours 0-5": (
            bounds,
            feed(ttl=3600, skip_hours=frozenset(range(6))),
        ),
    }
    errors = {
        "HTTP 500 from 02:00 to 08:00": (bounds, failing(7200, 28800, status=500)),
        "429 Retry-After 3600 all day": (bounds, failing(0, DAY, status=429, retry_after=3600)),
    }
    cases = {**story, **errors}
    periods = [("00-08 quiet", 0, 8), ("08-12 active", 8, 12), ("12-24 quiet", 12, 24)]
    header = (
        f"{'source':40}" + "".join(f"{name:>14}" for name, _, _ in periods) + f"{'per day':>10}"
    )
    print("requests per source per hour (one simulated day, jitter on)")
    print(header)
    for label, (b, observe) in cases.items():
        times = simulate(b, observe)
        row = "".join(f"{per_hour(times, s * 3600, e * 3600):>14.2f}" for _, s, e in periods)
        print(f"{label:40}{row}{len(times):>10}")


if __name__ == "__main__":
    main()
