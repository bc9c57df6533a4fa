"""Stored change to sink: how long an event takes to reach a sink in the daemon.

    python benchmarks/notify_latency.py [--feeds 50] [--interval 10] [--advances 5]
                                        [--sink webhook|jsonl] [--check-every 5s]
                                        [--spread SECONDS] [--keep DIR]

Starts benchmarks/feedserver.py with N feeds and fills a fresh database with one
cold ``aggregator poll`` (no sink yet, so the first listing is not delivered).
Then runs ``aggregator run`` with every source on a fixed ``interval`` (polls
spread over it at start-up; ``--spread 1`` polls them all at once instead, every
interval: bursts of about 100 events) and one sink: a webhook receiver in this
process that timestamps each POST on arrival, or a jsonl file tailed every 2 ms.
Every ``interval`` seconds ``GET /_advance`` changes about half of the feeds;
the daemon finds the changes on its next polls and delivers them. Afterwards,
for every change event:

* latency = arrival time - ``changes.detected_at``. ``detected_at`` is the
  poll's ``fetches.started_at`` (UTC text ``YYYY-MM-DD HH:MM:SS.SSS``, written
  with the change), so this includes the fetch and the parse;
* after fetch = arrival time - (``detected_at`` + ``fetches.duration_ms``): the
  same without the HTTP fetch, nearer to stored-to-sink;
* split at ``deliveries.created_at`` (when the worker queued the event for the
  sink): fetch end -> queued is parse, store and the worker's wake-up; queued ->
  sink is the sink's queue (events ahead of it) and the send.

Prints count, median, p95 and max of each. Runs in about 20 + interval *
(advances + 2) seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import feedserver  # benchmarks/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent


class Arrivals:
    """Event id -> wall-clock time of its first arrival at the sink."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.lock = threading.Lock()

    def note(self, event_id: str, at: float) -> None:
        with self.lock:
            self.times.setdefault(event_id, at)


def webhook_receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    """A 127.0.0.1 endpoint that answers 200 and timestamps every POST."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            arrivals.note(json.loads(body)["id"], time.time())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tail_jsonl(path: Path, arrivals: Arrivals, stop: threading.Event) -> None:
    """Stamp each line appended to ``path`` (checked every 2 ms)."""
    offset, partial = 0, b""
    while not stop.is_set():
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            now = time.time()
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                arrivals.note(json.loads(line)["id"], now)
        time.sleep(0.002)


def write_config(path: Path, db: Path, base: str, args: argparse.Namespace, sink: str) -> None:
    lines = [
        f'[storage]\ndatabase = "{db}"\n',
        f'[schedule]\nstartup_spread = "{args.spread or args.interval:g}s"\n',
        f'[notify]\ncheck_every = "{args.check_every}"\n',
        sink,
    ]
    lines += [
        f'[[sources]]\nname = "f{i}"\nurl = "{base}/feed/{i}.xml"\n'
        f'interval = "{args.interval:g}s"\nadaptive = false\n'
        for i in range(args.feeds)
    ]
    path.write_text("\n".join(lines))


def seconds(text: str) -> float:
    """A database timestamp as a POSIX time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Stored:
    """One change event as the database has it (times as POSIX seconds)."""

    event_id: str
    detected: float  # changes.detected_at (the poll's fetch start)
    fetched: float  # detected + fetches.duration_ms
    queued: float | None  # deliveries.created_at: when the worker queued it for the sink


def stored_events(db: Path) -> list[Stored]:
    """Every change event with its detection, fetch end and queueing times."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT o.event_id, c.detected_at, COALESCE(f.duration_ms, 0), d.created_at"
            " FROM outbox o JOIN changes c ON c.id = o.change_id"
            " JOIN fetches f ON f.id = c.fetch_id LEFT JOIN deliveries d ON d.outbox_id = o.id"
            " ORDER BY o.id"
        ).fetchall()
    finally:
        conn.close()
    return [
        Stored(event_id, seconds(at), seconds(at) + ms / 1000, seconds(q) if q else None)
        for event_id, at, ms, q in rows
    ]


def summary(label: str, values: list[float]) -> None:
    if not values:
        print(f"{label}: no events")
        return
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"{label}: n={len(values)} median {1000 * statistics.median(values):.0f} ms,"
        f" p95 {1000 * p95:.0f} ms, max {1000 * ordered[-1]:.0f} ms,"
        f" min {1000 * ordered[0]:.0f} ms"
    )


def run(args: argparse.Namespace, tmp: Path, base: str, arrivals: Arrivals) -> tuple[Path, float]:
    """Cold poll, then the daemon through ``advances`` changes.

    Returns:
        The database and when the daemon started (POSIX time).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "aggregator"]
    config, db = tmp / "daemon.toml", tmp / "d.db"
    write_config(config, db, base, args, "")
    subprocess.run(
        [*cmd, "poll", "--config", str(config), "--log-level", "warning"],
        check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    stop = threading.Event()
    if args.sink == "webhook":
        receiver = webhook_receiver(arrivals)
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        sink = f'[[sinks]]\nkind = "webhook"\nname = "bench"\nurl = "{url}"\n'
    else:
        out = tmp / "events.jsonl"
        threading.Thread(target=tail_jsonl, args=(out, arrivals, stop), daemon=True).start()
        sink = f'[[sinks]]\nkind = "jsonl"\nname = "bench"\npath = "{out}"\n'
    write_config(config, db, base, args, sink)
    started = time.time()
    daemon = subprocess.Popen(
        [*cmd, "run", "--config", str(config), "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(args.interval)  # start-up and one round of unchanged polls
        for _ in range(args.advances):
            with urlopen(base + "/_advance", timeout=30) as r:  # our own loopback server
                print("advance:", r.read().decode())
            time.sleep(args.interval)
        time.sleep(args.interval)  # the last changes are polled and delivered
    finally:
        daemon.terminate()
        daemon.wait(60)
        stop.set()
        if args.sink == "webhook":
            receiver.shutdown()
    return db, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--advances", type=int, default=5)
    parser.add_argument("--sink", choices=("webhook", "jsonl"), default="webhook")
    parser.add_argument("--check-every", default="5s", help="[notify] check_every")
    parser.add_argument(
        "--spread",
        type=float,
        help="[schedule] startup_spread in s (default: interval, so polls are spread over it"
        " as the daemon's default does; 1 polls every source at once: bursts)",
    )
    parser.add_argument("--keep", metavar="DIR", help="write (and keep) config and database here")
    args = parser.parse_args()
    server, base = feedserver.start(args.feeds)
    arrivals = Arrivals()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db, since = run(args, Path(args.keep or tmp), base, arrivals)
            events = [e for e in stored_events(db) if e.detected >= since]
    finally:
        server.terminate()
        server.wait(10)
    times = arrivals.times
    arrived = [e for e in events if e.event_id in times]
    print(
        f"{args.feeds} feeds, interval {args.interval:g}s, check_every {args.check_every},"
        f" startup_spread {args.spread or args.interval:g}s, {args.sink} sink,"
        f" run {time.monotonic() - started:.0f} s"
    )
    print(f"change events the daemon stored: {len(events)}, arrived: {len(arrived)}")
    summary("detected_at -> sink  ", [times[e.event_id] - e.detected for e in arrived])
    summary("fetch end   -> sink  ", [times[e.event_id] - e.fetched for e in arrived])
    queued = [e for e in arrived if e.queued is not None]
    summary("fetch end   -> queued", [e.queued - e.fetched for e in queued if e.queued])
    summary("queued      -> sink  ", [times[e.event_id] - e.queued for e in queued if e.queued])


if __name__ == "__main__":
    main()
