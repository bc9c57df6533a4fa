"""Where one machine saturates: the cost of each pipeline stage, and the ceiling it implies.

    python benchmarks/ceiling.py                   # 2,000 feeds of 30 items
    python benchmarks/ceiling.py --feeds 5000

Runs the real pipeline (fetch on the event loop, parse in the worker pool, detect
and write on the single SQLite writer thread, events delivered to a JSON-lines
sink) against a local feed server, in three passes over a fresh database:

* ``cold``: every feed parsed, every entry new (the heaviest write load);
* ``304``: every feed answers Not Modified (the cost of a quiet poll);
* ``changed``: about half of the feeds changed (1 new, 2 edited, 1 removed each).

For each pass it measures the CPU seconds of the event-loop thread, of the writer
thread (``time.thread_time`` on each thread) and of the parse workers (/proc), and
the versions written. From the unit costs it prints, for a grid of sources x
interval x share of polls that find a change, the CPU the daemon needs and the
share of one core the single writer needs: the ceiling is where either reaches
the machine (the cores) or one core (the writer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import feedserver  # benchmarks/ is the script's directory
from daemon_bomb import tree
from daemon_steady import proc_cpu

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: (sources, interval seconds, share of polls finding a change, versions per changed poll)
GRID = [
    (s, i, p, 3) for s in (1_000, 10_000, 50_000, 100_000) for i in (300, 900) for p in (0.05, 0.25)
]


def write_config(path: Path, base: str, feeds: int) -> None:
    lines = [
        f'[storage]\ndatabase = "{path.parent / "ceiling.db"}"\n',
        '[fetch]\nconcurrency = 8\nper_host = 8\ntimeout = "60s"\n',
        f'[[sinks]]\nname = "log"\nkind = "jsonl"\npath = "{path.parent / "events.jsonl"}"\n',
    ]
    lines += [f'[[sources]]\nname = "f{i}"\nurl = "{base}/feed/{i}.xml"\n' for i in range(feeds)]
    path.write_text("\n".join(lines))


def workers_cpu() -> float:
    """CPU seconds of this process's live descendants (fork server, parse workers)."""
    total = 0.0
    for pid in tree(os.getpid()):
        if pid != os.getpid():
            try:
                total += proc_cpu(pid)
            except (OSError, IndexError):
                continue
    return total


def count_versions(store: Any) -> int:
    return int(store.db.execute("SELECT count(*) FROM versions").fetchone()[0])


async def one_pass(config: Any) -> dict[str, float]:
    from aggregator.fetch import Fetcher
    from aggregator.notify.worker import delivering_after
    from aggregator.pipeline import Pipeline
    from aggregator.sandbox import ParsePool
    from aggregator.store.thread import StoreThread

    store = StoreThread(config.storage.database)
    parsers = ParsePool(config.parse)
    parsers.start()
    try:
        versions0 = await store.call(count_versions, store.store)
        writer0, loop0 = await store.call(time.thread_time), time.thread_time()
        workers0, wall0 = workers_cpu(), time.perf_counter()
        async with delivering_after(config, store), Fetcher(config.fetch) as fetcher:
            pipeline = Pipeline(config, store, fetcher, parsers)
            await pipeline.sync()
            results = await pipeline.poll_all()
            workers1 = workers_cpu()  # before the pool closes and its workers exit
        writer1 = await store.call(time.thread_time)
        versions1 = await store.call(count_versions, store.store)
        return {
            "wall": time.perf_counter() - wall0,
            "loop": time.thread_time() - loop0,
            "writer": writer1 - writer0,
            "workers": workers1 - workers0,
            "polls": len(results),
            "parsed": sum(r.outcome in ("changed", "unchanged") for r in results),
            "versions": versions1 - versions0,
        }
    finally:
        parsers.close()
        store.close()


def unit_costs(passes: dict[str, dict[str, float]]) -> dict[str, float]:
    """CPU seconds per quiet poll, per parsed poll and per version written."""
    quiet = passes["304"]
    changed = passes["changed"]
    per_quiet = (quiet["loop"] + quiet["writer"]) / quiet["polls"]
    parsed = max(changed["parsed"], 1)
    per_parsed = (changed["loop"] + changed["workers"]) / parsed
    per_version = changed["writer"] / max(changed["versions"], 1)
    cold = passes["cold"]
    return {
        "quiet_poll": per_quiet,
        "parsed_poll": per_parsed,
        "version_changed": per_version,
        "version_cold": cold["writer"] / max(cold["versions"], 1),
    }


def grid_table(costs: dict[str, float], cores: int) -> str:
    lines = [
        "| sources | interval | polls finding a change | polls/s | versions/s"
        " | CPU needed (cores) | writer thread (share of a core) | fits? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sources, interval, share, per_change in GRID:
        polls = sources / interval
        versions = polls * share * per_change
        writer = versions * costs["version_changed"]
        cpu = polls * ((1 - share) * costs["quiet_poll"] + share * costs["parsed_poll"]) + writer
        fits = "yes" if cpu < 0.7 * cores and writer < 0.7 else "no"
        lines.append(
            f"| {sources:,} | {interval // 60} min | {share:.0%} | {polls:.0f} | {versions:.0f}"
            f" | {cpu:.2f} | {writer:.2f} | {fits} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=2000)
    args = parser.parse_args()
    import aggregator.notify  # registers the sink kinds' option checkers
    import aggregator.parse  # noqa: F401  (and the source kinds')
    from aggregator import config as config_mod
    from aggregator import log

    log.configure(level="WARNING")  # the per-delivery debug lines would cost CPU of their own

    server, base = feedserver.start(args.feeds)
    passes: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ceiling.toml"
            write_config(path, base, args.feeds)
            config = config_mod.load(path)
            for label, action in (("cold", None), ("304", None), ("changed", "/_advance")):
                if action:
                    with urlopen(base + action, timeout=60) as r:  # our loopback server
                        r.read()
                passes[label] = asyncio.run(one_pass(config))
    finally:
        server.terminate()
    print(
        f"| pass ({args.feeds:,} feeds) | wall s | polls | versions | versions/s"
        " | loop CPU s | writer CPU s | parse workers CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, p in passes.items():
        print(
            f"| {label} | {p['wall']:.1f} | {p['polls']:.0f} | {p['versions']:.0f}"
            f" | {p['versions'] / p['wall']:.0f} | {p['loop']:.2f} | {p['writer']:.2f}"
            f" | {p['workers']:.2f} |"
        )
    costs = unit_costs(passes)
    print()
    print(
        f"CPU ms per quiet (304) poll {1000 * costs['quiet_poll']:.2f}; per parsed poll"
        f" {1000 * costs['parsed_poll']:.2f}; writer ms per version"
        f" {1000 * costs['version_changed']:.2f} (changed pass),"
        f" {1000 * costs['version_cold']:.2f} (cold pass)"
    )
    cores = os.cpu_count() or 1
    print(
        f"writer ceiling: {1 / costs['version_changed']:.0f} versions/s on one core;"
        f" this machine has {cores} cores. 'fits' = under 70% of the cores and of the writer."
    )
    print()
    print(grid_table(costs, cores))


if __name__ == "__main__":
    main()
