"""Steady-state cost of the daemon at N sources that answer 304.

    python benchmarks/daemon_steady.py --feeds 10000 --interval 30 --cycles 3 [--policy fixed]

Starts benchmarks/feedserver.py with N feeds, fills a fresh database with one
cold ``aggregator poll``, then runs ``aggregator run`` with every source on a
fixed ``interval`` (``adaptive = false``; scaled down from 5 minutes so a run is
short; ``--policy default`` leaves ``adaptive`` on and the ``[schedule] policy`` at its
default, ``--policy learned``/``adaptive`` sets it) and, after one warm-up
interval, samples the daemon's CPU time and RSS from /proc for ``cycles``
intervals. Prints CPU seconds per cycle (one poll of
every source) of the whole process tree (the daemon, its fork server and parse
workers), the share of one core that is at a 5-minute interval, requests seen by
the server, the daemon's peak RSS and the tree's peak RSS and PSS (shared pages
counted once) during the window.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

import feedserver  # benchmarks/ is the script's directory
from daemon_bomb import memory_kb, tree

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (the parse workers)."""
    total = 0.0
    for member in tree(pid):
        try:
            total += proc_cpu(member)
        except (OSError, IndexError):
            continue
    return total


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB of ``pid`` and its descendants: the fork server, the parse workers."""
    sizes = [memory_kb(member) for member in tree(pid)]
    return sum(r for r, _ in sizes) / 1024, sum(p for _, p in sizes) / 1024


def proc_rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def requests(base: str) -> int:
    with urlopen(base + "/_requests", timeout=30) as r:  # our own loopback server
        return int(r.read())


def write_config(
    path: Path, db: Path, base: str, feeds: int, interval: float, policy: str = "fixed"
) -> None:
    named = f'policy = "{policy}"\n' if policy in ("learned", "adaptive") else ""
    lines = [
        f'[storage]\ndatabase = "{db}"\n',
        '[fetch]\nconcurrency = 4\nper_host = 4\ntimeout = "60s"\n',
        f'[schedule]\nstartup_spread = "{interval}s"\n{named}',
    ]
    adaptive = "false" if policy == "fixed" else "true"
    lines += [
        f'[[sources]]\nname = "f{i}"\nurl = "{base}/feed/{i}.xml"\n'
        f'interval = "{interval}s"\nadaptive = {adaptive}\n'
        for i in range(feeds)
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument(
        "--warmup", type=float, default=None,
        help="seconds before sampling (default 1.5 intervals); the learned schedule reads its"
        " history in the background at start-up: give it time to finish",
    )  # fmt: skip
    parser.add_argument(
        "--policy", choices=["fixed", "default", "adaptive", "learned"], default="fixed",
        help="fixed: adaptive = false (default); default: adaptive = true, [schedule] policy unset",
    )  # fmt: skip
    args = parser.parse_args()
    server, base = feedserver.start(args.feeds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "aggregator"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "daemon.toml"
            write_config(config, Path(tmp) / "d.db", base, args.feeds, args.interval, args.policy)
            started = time.perf_counter()
            subprocess.run(
                [*cmd, "poll", "--config", str(config), "--log-level", "warning"],
                check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            print(f"cold poll of {args.feeds} sources: {time.perf_counter() - started:.0f} s")
            daemon = subprocess.Popen(
                [*cmd, "run", "--config", str(config), "--log-level", "warning"],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                measure(daemon.pid, base, args)
            finally:
                daemon.terminate()
                daemon.wait(60)
    finally:
        server.terminate()
        server.wait(10)


def measure(pid: int, base: str, args: argparse.Namespace) -> None:
    """Sample CPU and RSS of the daemon's process tree over ``cycles`` intervals."""
    time.sleep(args.warmup if args.warmup is not None else args.interval * 1.5)
    cpu0, req0, t0 = tree_cpu(pid), requests(base), time.monotonic()
    peak = peak_tree_rss = peak_tree_pss = 0.0
    while time.monotonic() - t0 < args.interval * args.cycles:
        peak = max(peak, proc_rss_mb(pid))
        rss, pss = tree_memory_mb(pid)
        peak_tree_rss, peak_tree_pss = max(peak_tree_rss, rss), max(peak_tree_pss, pss)
        time.sleep(1.0)
    cpu, reqs = tree_cpu(pid) - cpu0, requests(base) - req0
    wall = time.monotonic() - t0
    cycles = reqs / args.feeds
    per_cycle = cpu / cycles if cycles else float("nan")
    print(f"window {wall:.0f} s: {reqs} requests ({cycles:.2f} cycles), tree CPU {cpu:.1f} s")
    print(f"CPU per cycle (every source once): {per_cycle:.1f} s")
    print(f"  = {1000 * per_cycle / args.feeds:.2f} ms per source")
    print(f"  = {100 * per_cycle / 300:.1f}% of one core at a 5-minute interval")
    print(f"daemon RSS: {proc_rss_mb(pid):.0f} MB now, {peak:.0f} MB peak in the window")
    print(
        f"process tree ({len(tree(pid))} processes, parse workers included): peak RSS"
        f" {peak_tree_rss:.0f} MB, peak PSS {peak_tree_pss:.0f} MB"
    )


if __name__ == "__main__":
    main()
