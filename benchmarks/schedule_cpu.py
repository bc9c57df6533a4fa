"""CPU of choosing the next poll, per poll and per refresh, at N sources (no network).

    python benchmarks/schedule_cpu.py [--sources 10000] [--days 14] [--polls 50000]

Builds a ``Book`` of N learned sources with ``--days`` of history (rates log-uniform
from 1 to 150 a day, daily rhythms, some bursts), then times, in this process:

* per poll, today's path (``decide`` + ``jittered`` + ``skip_hours_delay``, as the
  daemon ran it before the learned schedule) against ``rhythm_plan.next_check`` for
  ``fixed``, ``adaptive`` and ``learned`` (which also counts the poll in the ``Book``);
* per refresh, folding 15 minutes of rows of every source and solving the allocation;
* at start-up, folding the whole history.

Prints medians of 5 repeats (the start-up fold: one run).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aggregator import rhythm_plan as plan
from aggregator import schedule_policy as policy

DAY = 86400.0
NOW = datetime(2025, 3, 17, 12, tzinfo=UTC).timestamp()


def history(sources: int, days: float, rng: random.Random) -> tuple[list, list]:
    """Change and visit rows of ``sources`` over ``days`` before NOW."""
    changes, visits = [], []
    start = NOW - days * DAY
    for i in range(sources):
        name, per_day = f"s{i}", math.exp(rng.uniform(0, math.log(150)))
        peak, t, visit = rng.uniform(0, 24), start, 0
        while True:
            t += rng.expovariate(2 * per_day / DAY)
            if t >= NOW:
                break
            hour = (t % DAY) / 3600
            if rng.random() < (1 + math.cos(2 * math.pi * (hour - peak) / 24)) / 2:
                visit += 1
                changes.append(plan.ChangeRow(name, "new", t + 300, t, (i, visit)))
        visits.append(plan.VisitRow(name, int(days * 96), start, NOW))
    changes.sort(key=lambda r: r.detected)
    return changes, visits


def median_time(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=10000)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--polls", type=int, default=50000)
    args = parser.parse_args()
    rng = random.Random(1)
    bounds = policy.learned_bounds(900.0)
    changes, visits = history(args.sources, args.days, rng)

    def build() -> plan.Book:
        book = plan.Book()
        for i in range(args.sources):
            book.add(f"s{i}", bounds, NOW - args.days * DAY, fresh=False)
        book.refresh(changes, visits, NOW)
        book.allocate(NOW)
        return book

    started = time.perf_counter()
    book = build()
    load = time.perf_counter() - started
    print(f"{args.sources} sources, {len(changes)} changes over {args.days:g} days")
    print(f"start-up fold of the history and first allocation: {load:.2f} s")
    recent = [plan.ChangeRow(r.source, r.kind, r.detected + 900, r.published, r.visit)
              for r in changes[-len(changes) * 15 // int(args.days * 1440):]]  # fmt: skip
    step = [plan.VisitRow(f"s{i}", 1, NOW, NOW + 900) for i in range(args.sources)]

    def refresh() -> None:
        book.refresh(recent, step, NOW + 900)
        book.allocate(NOW + 900)

    print(f"refresh (15 min of rows) and allocation: {median_time(refresh):.3f} s")
    obs = policy.Observation(ok=True, changed=True, ttl=600.0)
    when = datetime.fromtimestamp(NOW, UTC)
    names = [f"s{rng.randrange(args.sources)}" for _ in range(args.polls)]
    jitter = random.Random(2)

    def today() -> None:
        for _ in names:
            d = policy.decide(policy.default_bounds(900.0), 900.0, obs, network_down=False)
            delay = policy.jittered(d.delay, jitter)
            policy.skip_hours_delay(when, delay, obs.skip_hours)

    def through(kind: str) -> Callable[[], None]:
        def run() -> None:
            for name in names:
                if kind == "learned":
                    book.observe(name, NOW, [NOW - 60], 0)
                plan.next_check(
                    kind, bounds, 900.0, obs, now=when, network_down=False, rng=jitter,
                    learned=(lambda n=name: book.delay(n, NOW)) if kind == "learned" else None,
                )  # fmt: skip

        return run

    base = median_time(today) / args.polls * 1e6
    print(f"per poll, before (decide + jitter + skipHours): {base:.1f} us")
    for kind in ("fixed", "adaptive", "learned"):
        took = median_time(through(kind)) / args.polls * 1e6
        print(f"per poll, next_check {kind}: {took:.1f} us ({took / base:.1f}x)")


if __name__ == "__main__":
    main()
