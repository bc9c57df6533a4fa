"""Write synthetic posting-time traces for ``schedule_sim.py``, from a fixed seed.

    python3 benchmarks/make_traces.py OUT_DIR [--set news|bursty|long|flat|all] [--seed 7]

Each set is a folder of ``<source>.jsonl`` files (``{"at", "kind", "key"}`` per
line, in time order). Sources are drawn, not hand-placed:

* ``news`` (30 days, 20 sources): rates log-uniform from 2 to 150 items a day,
  each with a daily rhythm peaking at a random local hour (its time zone), fewer
  items at weekends, and edits of some items in the hours after they appear;
  a few are quiet (under one a day) and a few stop part-way.
* ``bursty`` (10 days, 15 sources): live stories: a low background rate plus
  bursts (a breaking story: dozens of items over one to three hours, then
  nothing), with many edits.
* ``long`` (120 days, 12 sources): rhythms that change: a source moves its peak,
  doubles or halves its rate, stops, or starts late.
* ``flat`` (14 days, 20 sources): homogeneous Poisson sources, no rhythm and no
  bursts: what is left is the spread of rates across sources.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

DAY = 86400.0
START = datetime(2025, 3, 3, tzinfo=UTC).timestamp()  # a Monday

Rate = Callable[[float], float]  # events per second at a time (seconds since START)


def thinned(rng: random.Random, rate: Rate, peak: float, span: float) -> list[float]:
    """Times of a Poisson process of intensity ``rate`` (at most ``peak``) over ``span``."""
    times, t = [], 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= span:
            return times
        if rng.random() * peak < rate(t):
            times.append(t)


def daily(per_day: float, peak_hour: float, depth: float, weekend: float) -> Rate:
    """A daily rhythm: ``per_day`` on average, highest at ``peak_hour`` UTC."""

    def rate(t: float) -> float:
        hour = (t % DAY) / 3600
        shape = 1 + depth * math.cos(2 * math.pi * (hour - peak_hour) / 24)
        day = int(t // DAY) % 7  # START is a Monday: 5 and 6 are the weekend
        return per_day / DAY * shape * (weekend if day >= 5 else 1.0)

    return rate


def with_edits(
    rng: random.Random, times: list[float], share: float, name: str
) -> list[tuple[float, str, str]]:
    """(time, kind, key) for each new item, plus edits of ``share`` of them."""
    out = []
    for i, t in enumerate(times):
        key = f"{name}-{i}"
        out.append((t, "new", key))
        if rng.random() < share:
            edit = t
            for _ in range(rng.randint(1, 4)):
                edit += rng.expovariate(1 / 1800)
                out.append((edit, "edit", key))
    return out


def news_set(rng: random.Random) -> dict[str, list[tuple[float, str, str]]]:
    span, traces = 30 * DAY, {}
    for i in range(20):
        per_day = math.exp(rng.uniform(math.log(2), math.log(150)))
        if i < 3:
            per_day = rng.uniform(0.2, 1.0)  # quiet
        rate = daily(per_day, rng.uniform(6, 20), rng.uniform(0.3, 0.95), rng.uniform(0.3, 1.0))
        stop = rng.uniform(0.3, 0.8) * span if 3 <= i < 6 else span
        times = [t for t in thinned(rng, rate, 2.5 * per_day / DAY, span) if t < stop]
        traces[f"news{i:02d}"] = with_edits(rng, times, rng.uniform(0, 0.3), f"n{i}")
    return traces


def bursty_set(rng: random.Random) -> dict[str, list[tuple[float, str, str]]]:
    span, traces = 10 * DAY, {}
    for i in range(15):
        background = daily(rng.uniform(1, 10), rng.uniform(6, 20), 0.6, 0.7)
        times = thinned(rng, background, 2 * 10 / DAY, span)
        for _ in range(rng.randint(0, 5)):
            begin, length = rng.uniform(0, span), rng.uniform(3600, 3 * 3600)
            count = rng.randint(10, 60)
            times += [begin + rng.uniform(0, length) for _ in range(count)]
        times = sorted(t for t in times if t < span)
        traces[f"live{i:02d}"] = with_edits(rng, times, rng.uniform(0.2, 0.6), f"l{i}")
    return traces


def long_set(rng: random.Random) -> dict[str, list[tuple[float, str, str]]]:
    span, traces = 120 * DAY, {}
    for i in range(12):
        per_day = math.exp(rng.uniform(math.log(1), math.log(100)))
        first = daily(per_day, rng.uniform(6, 20), rng.uniform(0.3, 0.9), rng.uniform(0.4, 1))
        change = rng.choice(["peak", "double", "halve", "stop", "late", "none"])
        switch = rng.uniform(0.3, 0.7) * span
        factor = {"double": 2.0, "halve": 0.5}.get(change, 1.0)
        second = daily(per_day * factor, rng.uniform(6, 20), 0.6, 0.8) if change == "peak" else None

        def rate(
            t: float,
            first: Rate = first,
            second: Rate | None = second,
            change: str = change,
            switch: float = switch,
            factor: float = factor,
        ) -> float:
            if (change == "late" and t < switch) or (change == "stop" and t >= switch):
                return 0.0
            if t >= switch and second is not None:
                return second(t)
            return first(t) * (factor if t >= switch else 1.0)  # fmt: skip

        times = thinned(rng, rate, 4 * per_day / DAY, span)
        traces[f"long{i:02d}-{change}"] = with_edits(rng, times, rng.uniform(0, 0.2), f"g{i}")
    return traces


def flat_set(rng: random.Random) -> dict[str, list[tuple[float, str, str]]]:
    span, traces = 14 * DAY, {}
    for i in range(20):
        per_day = math.exp(rng.uniform(math.log(2), math.log(150)))
        times = thinned(rng, lambda _t, r=per_day / DAY: r, per_day / DAY, span)
        traces[f"flat{i:02d}"] = [(t, "new", f"f{i}-{j}") for j, t in enumerate(times)]
    return traces


SETS = {"news": news_set, "bursty": bursty_set, "long": long_set, "flat": flat_set}


def write(folder: Path, traces: dict[str, list[tuple[float, str, str]]]) -> None:
    """One ``<source>.jsonl`` per source, in time order."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, events in traces.items():
        lines = []
        for t, kind, key in sorted(events):
            at = datetime.fromtimestamp(START + t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(json.dumps({"at": at, "kind": kind, "key": key}))
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", choices=[*SETS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for name in SETS if args.set == "all" else [args.set]:
        write(args.out / name, SETS[name](random.Random(f"{args.seed}-{name}")))
        print(args.out / name)


if __name__ == "__main__":
    main()
