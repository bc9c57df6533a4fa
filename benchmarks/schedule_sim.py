"""Replay posting times through the daemon's own scheduling code, on a virtual clock.

    python3 benchmarks/schedule_sim.py TRACES_DIR [--interval 10m] [--undated] [--seed 1]

TRACES_DIR holds one ``<source>.jsonl`` per source, each line
``{"at": "2021-09-16T21:24:18Z", "kind": "new" | "edit", "key": "..."}`` in time
order. Each simulated source serves the items posted by the virtual time of a
request, with an ETag that changes when they do (a request that finds nothing
new is a 304). New items carry their own date (``--undated``: none, so the
learned schedule has only detection times and visits to go on).

Policies, each over the same window (from the first event of any source to the
last plus ``--interval``), every source polled from the start:

* ``fixed``: every source at ``--interval`` (``adaptive = false``);
* ``adaptive``: today's halve-after-a-change schedule (``[schedule] policy = "adaptive"``);
* ``learned``: each source's learned rhythm (``[schedule] policy = "learned"``), with
  a budget of ``interval`` per source read as the average, which is fixed's requests.

Each is chosen by ``aggregator.rhythm_plan.next_check`` with the bounds of
``aggregator.scheduler.bounds_for`` and, for ``learned``, the ``Book`` refreshed
from the rows the polls recorded every ``REFRESH`` seconds, as the daemon does.

Prints one JSON object, by policy: ``requests``, ``requests_per_day``,
``mean_delay_s``, ``median_delay_s``, ``p95_delay_s`` (from each event to the
first request that sees it; events past the window's end are followed until
seen) and ``missed`` (edits overwritten before any request saw them).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aggregator import rhythm_plan as plan
from aggregator import schedule_policy as policy
from aggregator.config import Config, ScheduleConfig, SourceConfig
from aggregator.scheduler import bounds_for, policy_of
from aggregator.timeutil import parse_duration


@dataclass(frozen=True, slots=True)
class Event:
    """One posting: a new item or an edit of one."""

    at: float
    kind: str
    key: str


def load_traces(folder: Path) -> dict[str, list[Event]]:
    """Every ``<source>.jsonl`` in ``folder``, by source name (events sorted by time)."""
    traces = {}
    for path in sorted(folder.glob("*.jsonl")):
        events = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                at = datetime.fromisoformat(raw["at"].replace("Z", "+00:00"))
                kind = raw["kind"]
                if kind not in ("new", "edit"):
                    raise ValueError(f"kind must be new or edit, got {kind!r}")
                events.append(Event(plan.epoch(at), kind, str(raw["key"])))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SystemExit(f"{path}:{number}: {exc}") from None
        traces[path.stem] = sorted(events, key=lambda e: e.at)
    if not traces:
        raise SystemExit(f"{folder}: no <source>.jsonl files")
    if not any(traces.values()):
        raise SystemExit(f"{folder}: the <source>.jsonl files hold no events")
    return traces


@dataclass(slots=True)
class Feed:
    """One simulated source: what a request at a virtual time sees."""

    events: list[Event]
    dated: bool
    shown: int = 0  # events posted by the last request
    seen_at: list[float | None] = field(default_factory=list)
    missed: int = 0

    def __post_init__(self) -> None:
        self.seen_at = [None] * len(self.events)

    def request(self, t: float) -> tuple[bool, list[float | None], int]:
        """(changed, dates of new items, edited items) for a request at ``t``."""
        start, end = self.shown, self.shown
        while end < len(self.events) and self.events[end].at <= t:
            end += 1
        self.shown = end
        if end == start:
            return False, [], 0
        fresh = self.events[start:end]
        last = {e.key: i for i, e in enumerate(fresh)}
        new_keys = {e.key for e in fresh if e.kind == "new"}
        for i, event in enumerate(fresh):
            if event.kind == "edit" and last[event.key] != i:
                self.missed += 1  # overwritten by a later change before any request
            else:
                self.seen_at[start + i] = t
        dates = [e.at if self.dated else None for e in fresh if e.kind == "new"]
        edits = len({e.key for e in fresh if e.kind == "edit"} - new_keys)
        return True, dates, edits

    def done(self) -> bool:
        """True once every event has been seen (or missed)."""
        return self.shown == len(self.events)


@dataclass(slots=True)
class Log:
    """The rows polls recorded (what the daemon reads back from ``changes``/``fetches``)."""

    changes: list[plan.ChangeRow] = field(default_factory=list)
    visits: list[tuple[str, float]] = field(default_factory=list)
    read: int = 0  # changes before this index were folded
    read_visits: int = 0

    def take(self, upto: float) -> tuple[list[plan.ChangeRow], list[plan.VisitRow]]:
        """Rows recorded before ``upto`` not yet folded (rows are appended in time order)."""
        end = self.read
        while end < len(self.changes) and self.changes[end].detected < upto:
            end += 1
        changes, self.read = self.changes[self.read : end], end
        stop = self.read_visits
        while stop < len(self.visits) and self.visits[stop][1] < upto:
            stop += 1
        grouped: dict[str, list[float]] = {}
        for name, at in self.visits[self.read_visits : stop]:
            grouped.setdefault(name, []).append(at)
        self.read_visits = stop
        rows = [plan.VisitRow(n, len(ts), ts[0], ts[-1]) for n, ts in grouped.items()]
        return changes, rows


def simulate(
    traces: dict[str, list[Event]], kind: str, interval: float, *, dated: bool, seed: int
) -> dict[str, float | int]:
    """Replay ``traces`` under policy ``kind``; the figures of the result object."""
    rng = random.Random(seed)
    start = min(e[0].at for e in traces.values() if e)
    end = max(e[-1].at for e in traces.values() if e) + interval
    schedule = ScheduleConfig(policy="adaptive" if kind == "adaptive" else "learned")
    config = Config(schedule=schedule)
    sources = {
        n: SourceConfig(url=f"http://sim.invalid/{n}", name=n, interval=interval,
                        adaptive=kind != "fixed")
        for n in traces
    }  # fmt: skip
    bounds = {n: bounds_for(s, config) for n, s in sources.items()}
    feeds = {n: Feed(traces[n], dated) for n in traces}
    book, log = plan.Book(), Log()
    for name in traces:
        book.add(name, bounds[name], start)
    book.allocate(start)
    refreshed = start
    current: dict[str, float | None] = dict.fromkeys(traces)
    spread = policy.startup_window(schedule.startup_spread, len(traces))
    queue = []
    for name in traces:
        first = policy.initial_delay(now=_dt(start), bounds=bounds[name], next_check_at=None,
                                     last_fetch_at=None, spread=spread, rng=rng)  # fmt: skip
        heapq.heappush(queue, (start + first, name))
    requests = 0
    while queue:
        t, name = heapq.heappop(queue)
        if t >= end and all(f.done() for f in feeds.values()):
            break
        if t >= end and feeds[name].done():
            continue
        requests += t < end
        if kind == "learned" and t - refreshed >= book.refresh_every():
            refreshed = t
            book.refresh(*log.take(t - book.refresh_lag()), t - book.refresh_lag())
            book.allocate(t)
        changed, dates, edits = feeds[name].request(t)
        visit = len(log.visits)
        log.visits.append((name, t))
        log.changes += [plan.ChangeRow(name, "new", t, d, visit) for d in dates]
        log.changes += [plan.ChangeRow(name, "changed", t, None, visit)] * edits
        book.observe(name, t, dates, edits)
        decision = plan.next_check(
            policy_of(sources[name], config), bounds[name], current[name],
            policy.Observation(ok=True, changed=changed),
            now=_dt(t), network_down=False, rng=rng,
            learned=lambda n=name, at=t: book.delay(n, at),
        )  # fmt: skip
        current[name] = decision.interval
        heapq.heappush(queue, (t + decision.delay, name))
    return _figures(feeds, requests, end - start)


def _figures(feeds: dict[str, Feed], requests: int, span: float) -> dict[str, float | int]:
    delays = sorted(
        seen - e.at
        for f in feeds.values()
        for e, seen in zip(f.events, f.seen_at, strict=True)
        if seen is not None
    )
    return {
        "requests": requests,
        "requests_per_day": round(requests / (span / plan.DAY), 1),
        "mean_delay_s": round(statistics.fmean(delays), 1) if delays else 0.0,
        "median_delay_s": round(statistics.median(delays), 1) if delays else 0.0,
        "p95_delay_s": round(delays[int(0.95 * (len(delays) - 1))], 1) if delays else 0.0,
        "missed": sum(f.missed for f in feeds.values()),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("traces", type=Path, help="folder of <source>.jsonl files")
    parser.add_argument("--interval", default="10m", help="fixed polling interval (10m)")
    parser.add_argument("--undated", action="store_true", help="serve new items without dates")
    parser.add_argument("--seed", type=int, default=1, help="seed of the jitter (1)")
    args = parser.parse_args(argv)
    interval = parse_duration(args.interval)
    traces = load_traces(args.traces)
    out = {
        kind: simulate(traces, kind, interval, dated=not args.undated, seed=args.seed)
        for kind in ("learned", "adaptive", "fixed")
    }
    fixed = out["fixed"]
    for figures in out.values():
        figures["mean_delay_vs_fixed"] = _ratio(figures["mean_delay_s"], fixed["mean_delay_s"])
        figures["requests_vs_fixed"] = _ratio(figures["requests"], fixed["requests"])
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
