"""Push to stored, and push to sink: how fast a change a WebSub hub pushes is handled.

    python benchmarks/websub_latency.py [--deliveries 50] [--items 30] [--gap 0.2]
                                        [--backend sqlite|postgresql]

Runs ``aggregator run`` (a real daemon process) with one feed on a local server that
names a local hub (tests/hub.py, written to the WebSub spec), the callback endpoint on
loopback, and a webhook sink in this process that timestamps each POST on arrival.
Once the hub has verified the subscription, it pushes ``--deliveries`` new versions
of the feed (``--items`` items each, one of them new), one at a time, ``--gap``
seconds apart, each signed with the subscription's secret. For each:

* push -> stored: from the hub starting its POST to the daemon's 202, which it sends
  only after the body was parsed in the worker pool, detected and committed with its
  outbox event (so this is an upper bound);
* push -> sink: from the hub starting its POST to the event's arrival at the sink.

Prints count, median, p95 and max of each, and how many times the feed was fetched
meanwhile (the target: none; the feed's interval is 10 minutes and the safety poll an
hour). Takes about 10 + deliveries * (gap + latency) seconds. ``--backend postgresql``
starts a throw-away PostgreSQL server (tests/pg.py, Debian's postgresql-15) for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hub import Hub  # noqa: E402
from tests.pg import PgServer  # noqa: E402
from tests.server import QuietHTTPServer, TestServer  # noqa: E402
from tests.websubrig import feed  # noqa: E402


class Sink:
    """A webhook endpoint: entry key of each change event -> arrival time."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                event = json.loads(body)
                key = (event.get("entry") or {}).get("key") or event.get("id")
                with sink.lock:
                    sink.arrivals.setdefault(str(key), at)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp: Path, db: str, topic: str, port: int, sink: Sink) -> Path:
    path = tmp / "aggregator.toml"
    path.write_text(
        f'[storage]\ndatabase = "{db}"\n'
        f'[websub]\ncallback = "http://127.0.0.1:{port}/websub"\nlisten = "127.0.0.1:{port}"\n'
        '[schedule]\nstartup_spread = "0.1s"\n'
        '[notify]\ncheck_every = "60s"\n'
        f'[[sinks]]\nkind = "webhook"\nname = "hook"\nurl = "{sink.url}"\n'
        f'[[sources]]\nname = "news"\nurl = "{topic}"\ninterval = "10m"\n'
    )
    return path


def wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.005)


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return {
        "count": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(ms[-1], 1),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    server, hub, sink = TestServer().start(), Hub(), Sink()
    topic = server.url("/feed.xml")
    first = max(1, args.items - 1)
    server.serve("/feed.xml", feed(hub.url, topic, first))
    config = write_config(tmp, args.db, topic, free_port(), sink)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "aggregator", "run", "--config", str(config)]
    daemon = subprocess.Popen([*command, "--log-level", "WARNING"], env=env, cwd=tmp)
    stored: list[float] = []
    sunk: list[float] = []
    try:
        wait(lambda: bool(hub.subscribers(topic)), 30, "the hub's verified subscription")
        time.sleep(0.5)  # the first poll's bookkeeping settles
        polls = len(server.hits("/feed.xml"))
        for n in range(first + 1, first + 1 + args.deliveries):
            body = feed(hub.url, topic, n, only=list(range(n, max(0, n - args.items), -1)))
            server.serve("/feed.xml", body)  # what a poll would see, too
            [delivery] = hub.publish(topic, body)
            if delivery.status != 202:
                raise SystemExit(f"delivery {n} answered {delivery.status}")
            stored.append(delivery.seconds)
            wait(lambda n=n: f"item-{n}" in sink.arrivals, 10, f"item-{n} at the sink")
            sunk.append(sink.arrivals[f"item-{n}"] - delivery.sent_at)
            time.sleep(args.gap)
        polled = len(server.hits("/feed.xml")) - polls
    finally:
        daemon.terminate()
        daemon.wait(30)
        hub.stop()
        server.stop()
    return {
        "push_to_stored": summary(stored),
        "push_to_sink": summary(sunk),
        "feed_fetches_during_pushes": polled,
        "items_per_body": args.items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--items", type=int, default=30, help="items in each pushed body")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between deliveries")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        postgres = PgServer().start() if args.backend == "postgresql" else None
        try:
            args.db = postgres.fresh() if postgres else str(Path(tmp) / "history.db")
            report = run(args, Path(tmp))
        finally:
            if postgres is not None:
                postgres.stop()
    print(json.dumps({"backend": args.backend, **report}, indent=2))


if __name__ == "__main__":
    main()
