"""Notifications under load: a breaking story's burst through ``aggregator run`` to a webhook.

    python3 benchmarks/delivery_burst.py burst [--feeds 200] [--seconds 20] [--interval 5]
                                               [--down 0] [--processes 1]
    python3 benchmarks/delivery_burst.py throughput [--feeds 200] [--concurrency 1 4 8 16]
    python3 benchmarks/delivery_burst.py kills [--feeds 200] [--kills 10]

``burst``: benchmarks/feedserver.py serves N feeds; ``aggregator run`` polls them every
``--interval`` seconds (5) from an empty database (their first listing is its baseline:
stored, not sent);
then every second for ``--seconds`` about half of the feeds change (an item added, one
retitled, one edited, one dropped). One webhook sink points at a receiver in this process
that takes 20 ms per request and refuses every 20th with a 503 (a busy, slightly flaky
endpoint). With ``--down S`` the receiver is unreachable for S seconds from the middle of
the burst, and the daemon's memory (RSS of its process tree) is sampled every second.
Prints: events stored and delivered, delay from stored (``outbox.created_at``) to arrival
(median, p95, max), how long after the burst's last stored event the last one arrived,
stories delivered out of version order, events lost, and the memory samples.

``throughput``: fills a database with the feeds' first listing (``send_first_listing``,
nothing delivered), then for each concurrency copies it and runs ``aggregator outbox
deliver`` against a receiver that accepts everything in 20 ms: events per second, and the
delivering process's CPU per event.

``kills``: the same filled database; ``aggregator outbox deliver`` is killed with SIGKILL at
a random moment ``--kills`` times, then run to the end: events lost, and re-sends (same id).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import feedserver  # benchmarks/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent


class Receiver:
    """A webhook endpoint: ``delay`` s per request, every ``refuse_every``-th answered 503."""

    def __init__(self, delay: float = 0.02, refuse_every: int = 0) -> None:
        self.delay, self.refuse_every = delay, refuse_every
        self.arrivals: list[tuple[str, float]] = []  # (event id, time) of each 2xx answer
        self.count = 0
        self.lock = threading.Lock()
        self.accepting = True
        self.httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    def up(self) -> None:
        receiver = self
        self.accepting = True

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not receiver.accepting:  # down: kept-alive connections get no answer either
                    self.close_connection = True
                    return
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.count += 1
                    refuse = receiver.refuse_every and receiver.count % receiver.refuse_every == 0
                    if not refuse:
                        receiver.arrivals.append((json.loads(body)["id"], time.time()))
                self.send_response(503 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self.httpd is not None
        self.accepting = False
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def write_config(
    path: Path,
    db: Path,
    base: str,
    feeds: int,
    hook: str,
    extra: str = "",
    sink: str = "",
    interval: float = 5.0,
) -> None:
    lines = [
        f'[storage]\ndatabase = "{db}"\n',
        '[schedule]\nstartup_spread = "1s"\nshutdown_grace = "5s"\n',
        "[fetch]\nconcurrency = 16\nper_host = 16\n",
        f'[notify]\ncheck_every = "5s"\n{extra}\n',
        f'[[sinks]]\nkind = "webhook"\nname = "hook"\nurl = "{hook}"\n{sink}\n',
    ]
    for i in range(feeds):
        lines.append(
            f'[[sources]]\nname = "f{i}"\nurl = "{base}/feed/{i}.xml"\ninterval = "{interval}s"\n'
            "adaptive = false\n"
        )
    path.write_text("\n".join(lines))


def aggregator(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True, **kwargs,
    )  # fmt: skip


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in bytes."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{current}/task/{current}/children") as children:
                todo += [int(c) for c in children.read().split()]
        except (OSError, ValueError):
            continue
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def burst(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    server, base = feedserver.start(args.feeds)
    receiver = Receiver(0.02, 20)
    db, config = tmp / "burst.db", tmp / "burst.toml"
    write_config(config, db, base, args.feeds, receiver.url, f"processes = {args.processes}",
                 interval=args.interval)  # fmt: skip
    log = (tmp / "daemon.log").open("w")  # a pipe nobody reads would block the daemon
    daemon = aggregator("run", "--config", str(config), "--log-level", "WARNING",
                        stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    memory: list[tuple[float, int]] = []
    try:
        time.sleep(args.interval + 5)  # every feed's first listing (the baseline) is stored
        started = time.time()
        went_down = came_up = None
        for second in range(args.seconds):
            urlopen(f"{base}/_advance").read()
            if args.down and second == args.seconds // 2:
                receiver.down()
                went_down = time.time()
            memory.append((time.time() - started, tree_rss(daemon.pid)))
            time.sleep(1)
        if went_down is not None:
            while time.time() - went_down < args.down:
                memory.append((time.time() - started, tree_rss(daemon.pid)))
                time.sleep(1)
            receiver.up()
            came_up = time.time()
        burst_end = time.time()
        deadline = burst_end + args.wait
        while time.time() < deadline:
            time.sleep(1)
            memory.append((time.time() - started, tree_rss(daemon.pid)))
            if _pending(db) == 0 and _unqueued(db) == 0:
                break
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        log.close()
        err = (tmp / "daemon.log").read_text()
        server.terminate()
    return _report(db, receiver, started, burst_end, memory, went_down, came_up, err)


def _pending(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT count(*) FROM deliveries WHERE status = 'pending'"
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _unqueued(db: Path) -> int:
    """Events past the sink's cursor (not looked at yet)."""
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT count(*) FROM outbox WHERE id > (SELECT max(cursor) FROM sinks)"
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _report(
    db: Path,
    receiver: Receiver,
    started: float,
    burst_end: float,
    memory: list[tuple[float, int]],
    went_down: float | None,
    came_up: float | None,
    err: str,
) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    stored = conn.execute(
        "SELECT event_id, created_at, COALESCE(entry_id, -source_id), id, baseline FROM outbox"
        " WHERE type = 'change' OR type LIKE 'source.%' ORDER BY id"
    ).fetchall()
    conn.close()
    sent = [row for row in stored if not row[4]]
    in_burst = [row for row in sent if stamp(row[1]) >= started]
    first_arrival: dict[str, float] = {}
    for event_id, at in receiver.arrivals:
        first_arrival.setdefault(event_id, at)
    delays = [first_arrival[r[0]] - stamp(r[1]) for r in in_burst if r[0] in first_arrival]
    lost = [r[0] for r in sent if r[0] not in first_arrival]
    order = {event_id: n for n, (event_id, _) in enumerate(receiver.arrivals)}
    stories: dict[int, list[int]] = {}
    for event_id, _created, story, _outbox_id, _base in sent:
        if event_id in order:
            stories.setdefault(story, []).append(order[event_id])
    out_of_order = sum(1 for arrivals in stories.values() if arrivals != sorted(arrivals))
    last_stored = max((stamp(r[1]) for r in in_burst), default=started)
    last_arrival = max((first_arrival.get(r[0], 0.0) for r in in_burst), default=0.0)
    rss = [m for _, m in memory]
    figures: dict[str, Any] = {
        "baseline_events_stored_not_sent": len(stored) - len(sent),
        "events_stored": len(in_burst),
        "events_delivered": sum(1 for r in in_burst if r[0] in first_arrival),
        "lost": len(lost),
        "duplicates": len(receiver.arrivals) - len(first_arrival),
        "refused_503": receiver.count - len(receiver.arrivals),
        "delay_median_s": round(statistics.median(delays), 3) if delays else None,
        "delay_p95_s": round(pct(delays, 0.95), 3) if delays else None,
        "delay_max_s": round(max(delays), 3) if delays else None,
        "last_arrival_after_last_stored_s": round(last_arrival - last_stored, 3),
        "stories": len(stories),
        "stories_out_of_version_order": out_of_order,
        "tree_rss_mib": {"min": round(min(rss) / 2**20, 1), "max": round(max(rss) / 2**20, 1)},
        "daemon_errors": err.count('"level": "error"'),
    }
    if went_down is not None and came_up is not None:
        during = [m for t, m in memory if went_down - started <= t <= came_up - started]
        figures["receiver_down_s"] = round(came_up - went_down, 1)
        figures["tree_rss_mib_while_down"] = {
            "first": round(during[0] / 2**20, 1), "last": round(during[-1] / 2**20, 1),
            "max": round(max(during) / 2**20, 1),
        }  # fmt: skip
        figures["all_arrived_after_up_s"] = round(last_arrival - came_up, 2)
    return figures


def fill(args: argparse.Namespace, tmp: Path, hook: str) -> tuple[Path, Path, int]:
    """A database whose outbox holds the feeds' first listing, queued for the sink."""
    server, base = feedserver.start(args.feeds)
    db, config = tmp / "filled.db", tmp / "filled.toml"
    write_config(config, db, base, args.feeds, hook, "deliver_on_poll = false",
                 "send_first_listing = true")  # fmt: skip
    try:
        done = aggregator("poll", "--config", str(config), "--log-level", "WARNING",
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        _, err = done.communicate(timeout=600)
        assert done.returncode == 0, err
    finally:
        server.terminate()
    conn = sqlite3.connect(db)
    events = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    conn.close()
    return db, config, events


def deliver(config: Path, db: Path, concurrency: int) -> tuple[float, float]:
    """Run ``outbox deliver`` to the end: (wall seconds, CPU seconds of that process)."""
    text = re.sub(r"\nconcurrency = \d+\n", "\n", config.read_text())
    text = text.replace('name = "hook"\n', f'name = "hook"\nconcurrency = {concurrency}\n', 1)
    config.write_text(text)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    clock = time.monotonic()
    proc = aggregator("outbox", "deliver", "--config", str(config), "--db", str(db),
                      "--log-level", "WARNING", stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE)  # fmt: skip
    _, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err
    wall = time.monotonic() - clock
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    receiver = Receiver(0.02, 0)
    db, config, events = fill(args, tmp, receiver.url)
    baseline_cpu = _startup_cpu(config, db)
    results = {}
    for concurrency in args.concurrency:
        copy = tmp / f"c{concurrency}.db"
        shutil.copy(db, copy)
        receiver.arrivals.clear()
        wall, cpu = deliver(config, copy, concurrency)
        got = len({e for e, _ in receiver.arrivals})
        results[f"concurrency_{concurrency}"] = {
            "events": got,
            "events_per_s": round(got / wall, 1),
            "cpu_ms_per_event": round((cpu - baseline_cpu) / max(got, 1) * 1000, 3),
            "wall_s": round(wall, 1),
        }
    return {"events_queued": events, "startup_cpu_s": round(baseline_cpu, 2), **results}


def _startup_cpu(config: Path, db: Path) -> float:
    """CPU of an ``outbox deliver`` with nothing to send (start-up and imports)."""
    empty = db.with_name("empty.db")
    shutil.copy(db, empty)
    conn = sqlite3.connect(empty)
    conn.execute("UPDATE deliveries SET status = 'delivered'")
    conn.commit()
    conn.close()
    runs = [deliver(config, empty, 8)[1] for _ in range(3)]
    return statistics.median(runs)


def kills(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    receiver = Receiver(0.02, 0)
    db, config, _events = fill(args, tmp, receiver.url)
    rng = random.Random(args.seed)
    for _ in range(args.kills):
        proc = aggregator("outbox", "deliver", "--config", str(config), "--log-level",
                          "WARNING", stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(1.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deliver(config, db, 8)
    conn = sqlite3.connect(db)
    produced = {r[0] for r in conn.execute("SELECT event_id FROM outbox")}
    conn.close()
    counts = Counter(e for e, _ in receiver.arrivals)
    return {
        "events": len(produced),
        "kills": args.kills,
        "lost": len(produced - set(counts)),
        "resent_same_id": sum(n - 1 for n in counts.values()),
        "unknown_ids": len(set(counts) - produced),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("burst", "throughput", "kills"))
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20, help="burst: seconds of changes")
    parser.add_argument("--down", type=float, default=0, help="burst: receiver down, seconds")
    parser.add_argument("--wait", type=float, default=240, help="burst: drain at most, s")
    parser.add_argument("--interval", type=float, default=5.0, help="burst: each feed's, s")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="burst: [notify] processes (0: delivery inside the daemon)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="delivery-"))
    try:
        run = {"burst": burst, "throughput": throughput, "kills": kills}[args.what]
        print(json.dumps({args.what: run(args, tmp)}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)


if __name__ == "__main__":
    main()
