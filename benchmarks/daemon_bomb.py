"""The daemon with N healthy feeds plus one entity-bomb source: memory, schedule, failures.

    python benchmarks/daemon_bomb.py --feeds 1000 --interval 30 --duration 150

Starts benchmarks/feedserver.py with N feeds and its ``/bomb.xml`` (a ~400 KB RSS
feed declaring one 100 KB entity referenced 100,000 times, answered 200 every
time), runs ``aggregator run`` on a fresh database with every source on a fixed
``interval`` (``adaptive = false``) and samples the whole process tree (the
daemon, the fork server, the parse workers) from /proc every half second: the
sum of RSS and of PSS (shared pages counted once, as the cgroup's ``MemoryMax``
does). Then stops the daemon with SIGTERM and reads the database: how often each
healthy source was fetched and the largest gap between two of its fetches, and
every attempt on the bomb source with its recorded reason and the gaps between
attempts (the backoff). Prints the figures and whether each target was met.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import feedserver  # benchmarks/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent
MEMORY_MAX_MB = 512  # the unit's MemoryMax


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    fields = {line.split(":")[0]: line.split()[1] for line in rollup[1:] if ":" in line}
    return int(fields.get("Rss", 0)), int(fields.get("Pss", 0))


def write_config(path: Path, db: Path, base: str, feeds: int, interval: float) -> None:
    lines = [
        f'[storage]\ndatabase = "{db}"\n',
        '[fetch]\nconcurrency = 4\nper_host = 4\ntimeout = "60s"\n',
        f'[schedule]\nstartup_spread = "{interval}s"\n',
        f'[[sources]]\nname = "bomb"\nurl = "{base}/bomb.xml"\ninterval = {interval}\n'
        "adaptive = false\n",
    ]
    lines += [
        f'[[sources]]\nname = "f{i}"\nurl = "{base}/feed/{i}.xml"\n'
        f'interval = "{interval}s"\nadaptive = false\n'
        for i in range(feeds)
    ]
    path.write_text("\n".join(lines))


def sample(pid: int, seconds: float) -> dict[str, float]:
    """Peak tree RSS/PSS (MB) and peak process count over ``seconds``."""
    peak_rss = peak_pss = peak_procs = 0.0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        pids = tree(pid)
        sizes = [memory_kb(p) for p in pids]
        peak_rss = max(peak_rss, sum(r for r, _ in sizes) / 1024)
        peak_pss = max(peak_pss, sum(p for _, p in sizes) / 1024)
        peak_procs = max(peak_procs, len(pids))
        time.sleep(0.5)
    return {"rss": peak_rss, "pss": peak_pss, "procs": peak_procs}


def gaps(times: list[str]) -> list[float]:
    moments = [datetime.fromisoformat(t) for t in sorted(times)]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]


def report(db: Path, feeds: int, interval: float, duration: float) -> list[str]:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT s.name, f.started_at, f.outcome, f.error FROM fetches f"
        " JOIN sources s ON s.id = f.source_id ORDER BY f.id"
    ).fetchall()
    healthy: dict[str, list[str]] = {}
    bomb = []
    for name, started, outcome, error in rows:
        if name == "bomb":
            bomb.append((started, outcome, error))
        else:
            healthy.setdefault(name, []).append(started)
    counts = [len(healthy.get(f"f{i}", [])) for i in range(feeds)]
    worst_gaps = [max(gaps(t), default=0.0) for t in healthy.values()]
    failed = [b for b in bomb if b[1] == "error"]
    lines = [
        f"healthy sources fetched: {sum(c > 0 for c in counts)}/{feeds};"
        f" fetches each min {min(counts)} median {statistics.median(counts):.0f}"
        f" (expected about {duration / interval:.1f})",
        f"largest gap between two fetches of one source: median"
        f" {statistics.median(worst_gaps):.1f} s, max {max(worst_gaps):.1f} s"
        f" (interval {interval:g} s)",
        f"bomb source: {len(bomb)} attempts, {len(failed)} recorded failed;"
        f" gaps {[round(g) for g in gaps([b[0] for b in bomb])]} s",
    ]
    reasons = sorted({b[2] for b in failed})
    lines += [f"  reason: {r}" for r in reasons]
    failures = conn.execute("SELECT consecutive_failures FROM sources WHERE name = 'bomb'")
    lines.append(f"  sources.consecutive_failures = {failures.fetchone()[0]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=150.0)
    args = parser.parse_args()
    server, base = feedserver.start(args.feeds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config, db = Path(tmp) / "daemon.toml", Path(tmp) / "d.db"
            write_config(config, db, base, args.feeds, args.interval)
            daemon = subprocess.Popen(
                [sys.executable, "-m", "aggregator", "run", "--config", str(config),
                 "--log-level", "warning"],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            peaks = sample(daemon.pid, args.duration)
            alive = daemon.poll() is None
            daemon.send_signal(signal.SIGTERM)
            _out, err = daemon.communicate(timeout=90)
            print(f"N = {args.feeds} healthy feeds + 1 entity bomb, interval {args.interval:g} s,"
                  f" {args.duration:g} s, {os.cpu_count()} CPUs")  # fmt: skip
            print(f"process tree peak: RSS {peaks['rss']:.0f} MB, PSS {peaks['pss']:.0f} MB,"
                  f" {peaks['procs']:.0f} processes (MemoryMax {MEMORY_MAX_MB} MB:"
                  f" {'met' if peaks['pss'] < MEMORY_MAX_MB else 'MISSED'})")  # fmt: skip
            print(f"daemon alive the whole run: {alive}; exit status {daemon.returncode}")
            for line in report(db, args.feeds, args.interval, args.duration):
                print(line)
            crashes = [ln for ln in err.decode(errors="replace").splitlines() if "Traceback" in ln]
            print(f"tracebacks in the daemon's log: {len(crashes)}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
