"""Peak memory of a one-shot `aggregator poll` of N sources, as a user runs it.

    python benchmarks/poll_memory.py                 # N = 10,000, cold then changed
    python benchmarks/poll_memory.py --feeds 2000

A feed server (benchmarks/feedserver.py, 30 items per feed) runs in its own
process. The real command ``aggregator poll --config ...`` runs as a
subprocess; every 50 ms this script samples the RSS of the command's own
process and the RSS/PSS of its whole tree (the fork server and the parse
workers). Two passes: cold (every feed parsed and every entry new, the worst
case), then after ``/_advance`` (about half of the feeds changed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

import feedserver  # benchmarks/ is the script's directory
from daemon_bomb import memory_kb, tree
from daemon_steady import proc_rss_mb, write_config

ROOT = Path(__file__).resolve().parent.parent


def run_poll(config: Path) -> dict[str, float]:
    """Run ``aggregator poll`` once; return its wall time and peak memory figures."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aggregator",
            "poll",
            "--config",
            str(config),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_main = peak_rss = peak_pss = 0.0
    while proc.poll() is None:
        try:
            peak_main = max(peak_main, proc_rss_mb(proc.pid))
            sizes = [memory_kb(member) for member in tree(proc.pid)]
        except OSError:
            break
        peak_rss = max(peak_rss, sum(r for r, _ in sizes) / 1024)
        peak_pss = max(peak_pss, sum(p for _, p in sizes) / 1024)
        time.sleep(0.05)
    _, err = proc.communicate()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"aggregator poll failed ({proc.returncode}):\n{err[-3000:]}")
    wall = time.perf_counter() - started
    return {"wall": wall, "main": peak_main, "tree_rss": peak_rss, "tree_pss": peak_pss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=10_000)
    args = parser.parse_args()
    server, base = feedserver.start(args.feeds)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "poll.toml"
            write_config(config, Path(tmp) / "poll.db", base, args.feeds, 600.0)
            print(
                f"| pass ({args.feeds:,} sources) | wall s | peak RSS, poll process MB"
                " | peak RSS, tree MB | peak PSS, tree MB |"
            )
            print("|---|---|---|---|---|")
            for label in ("cold (all new)", "changed (~half)"):
                if label.startswith("changed"):
                    with urlopen(base + "/_advance", timeout=60) as r:  # our loopback server
                        r.read()
                f = run_poll(config)
                print(
                    f"| {label} | {f['wall']:.1f} | {f['main']:.0f} | {f['tree_rss']:.0f}"
                    f" | {f['tree_pss']:.0f} |",
                    flush=True,
                )
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
