"""Several nodes on one PostgreSQL: no double poll, nothing lost or stored twice, one delivery.

    python3 benchmarks/multinode.py run [--nodes 3] [--feeds 1000] [--interval 30]
                                        [--minutes 5] [--advance 10] [--kill-after S]
                                        [--back-after S] [--drain 900] [--database URL]
    python3 benchmarks/multinode.py cost [--feeds 1000] [--interval 30] [--phase 60]
                                         [--database URL]

``run``: benchmarks/feedserver.py serves N feeds (recording every request); every
``--advance`` seconds about half of them change (an item added, one retitled, one edited,
one dropped). ``--nodes`` ``aggregator run`` processes share one PostgreSQL database (a
throw-away server is started unless ``--database`` names an empty one), every source at
``--interval`` (adaptive polling off, so a poll sooner than about half an interval can only
be a second node's), ``[fetch] per_host = 64`` (all feeds are on 127.0.0.1), and one
webhook sink whose receiver (in this process) records every event id. With
``--kill-after S`` the second node is killed with SIGKILL S seconds in, and started again
``--back-after`` seconds later. Prints:

* double polls: two requests for one feed less than half an interval apart;
* after the kill, the longest gap between two polls of a feed (lease + interval at most);
* duplicate versions (an entry's version equal to the one before it);
* lost changes: items (and item titles) that a 200 answer served but no version holds;
* events stored and delivered, events delivered twice (same id), events never delivered;
* each node's CPU seconds and the database server's; polls that stored something, by node
  (logged at info); nodes that exited before the end (a crash).

``cost``: one node, first on SQLite, then on PostgreSQL, over the same feeds: a quiet phase
(every poll answered 304) then a changing phase. Prints CPU per 304 poll and per stored
version of the node, and the PostgreSQL server's CPU per version.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import feedserver  # benchmarks/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.store.db import connect  # noqa: E402


class Receiver:
    """A webhook endpoint that accepts everything and counts each event id."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.ids[json.loads(body)["id"]] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"


def write_config(
    path: Path, database: str, base: str, args: argparse.Namespace, hook: str, node: str = ""
) -> None:
    """A node's config; its user agent names the node, so the feed server's record tells
    which node each answer went to."""
    lines = [
        f'[storage]\ndatabase = "{database}"\n',
        f'[schedule]\nstartup_spread = "{args.interval}s"\nshutdown_grace = "10s"\n',
        f'[fetch]\nconcurrency = 16\nper_host = 64\nuser_agent = "bench-node-{node}"\n',
        f'[[sinks]]\nkind = "webhook"\nname = "hook"\nurl = "{hook}"\n' if hook else "",
    ]
    for i in range(args.feeds):
        lines.append(
            f'[[sources]]\nname = "f{i}"\nurl = "{base}/feed/{i}.xml"\n'
            f'interval = "{args.interval}s"\nadaptive = false\n'
        )
    path.write_text("\n".join(lines))


def start_node(config: Path, name: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config),
         "--log-level", "INFO"],
        cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=log.open("a"),
        env={**os.environ, "AGGREGATOR_NODE": name, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of ``pid`` and its children that were waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant (parse workers)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_seconds(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return total


def postgres_cpu() -> float:
    """CPU seconds of every ``postgres`` process on the machine."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def empty_database(args: argparse.Namespace) -> tuple[str, Any]:
    """The database to use: ``--database``, else a new one on a throw-away server."""
    if args.database:
        return args.database, None
    from tests.pg import PgServer

    server = PgServer().start()
    return server.create(), server


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    url, pg = empty_database(args)
    server, base = feedserver.start(args.feeds, "--record")
    receiver = Receiver()
    names = [f"n{i + 1}" for i in range(args.nodes)]
    logs = {name: tmp / f"{name}.log" for name in names}
    for name in names:
        write_config(tmp / f"{name}.toml", url, base, args, receiver.url, name)
    nodes = {name: start_node(tmp / f"{name}.toml", name, logs[name]) for name in names}
    cpu: Counter[str] = Counter()
    server_cpu = postgres_cpu()
    killed_at = back_at = None
    try:
        started = time.time()
        next_advance = started + args.advance
        while time.time() - started < args.minutes * 60:
            now = time.time()
            if now >= next_advance:
                urlopen(f"{base}/_advance").read()
                next_advance += args.advance
            elapsed = now - started
            if args.kill_after and killed_at is None and elapsed >= args.kill_after:
                cpu["n2"] += tree_cpu(nodes["n2"].pid)
                nodes["n2"].send_signal(signal.SIGKILL)
                nodes["n2"].wait()
                killed_at = time.time()
            if killed_at and back_at is None and elapsed >= args.kill_after + args.back_after:
                nodes["n2"] = start_node(tmp / "n2.toml", "n2", logs["n2"])
                back_at = time.time()
            time.sleep(0.2)
        time.sleep(2 * args.interval)  # the last changes are polled
        drained = _drain(url, receiver, args.drain)
        for name, node in nodes.items():
            cpu[name] += tree_cpu(node.pid)
    finally:
        exited = {name: node.poll() for name, node in nodes.items() if node.poll() is not None}
        for node in nodes.values():
            node.send_signal(signal.SIGTERM)
        for node in nodes.values():
            node.wait(timeout=60)
        server_cpu = postgres_cpu() - server_cpu
        record = json.loads(urlopen(f"{base}/_record").read())
        server.terminate()
    figures = _check(url, record, receiver, args, killed_at)
    figures["node_cpu_s"] = {k: round(v, 1) for k, v in sorted(cpu.items())}
    figures["postgres_cpu_s"] = round(server_cpu, 1)
    figures["drain_s"] = drained  # from two intervals after the run until every event arrived
    figures["nodes_exited_before_the_end"] = exited  # name: exit status (should be empty)
    texts = {name: path.read_text() for name, path in logs.items()}
    # polls that stored something are logged at info (a 304 or an unchanged 200 is debug)
    figures["changed_polls_by_node"] = {k: t.count("poll.done") for k, t in texts.items()}
    figures["errors_logged"] = sum(t.count('"level": "error"') for t in texts.values())
    if pg is not None:
        pg.stop()
    return figures


def _drain(url: str, receiver: Receiver, wait: float) -> float:
    """Until every stored event has reached the receiver (at most ``wait`` seconds);
    returns the seconds it took."""
    db = connect(url)
    started = time.time()
    try:
        while time.time() < started + wait:
            ids = {r[0] for r in db.execute("SELECT event_id FROM outbox WHERE baseline = 0")}
            if ids <= set(receiver.ids):
                break
            time.sleep(1)
    finally:
        db.close()
    return round(time.time() - started, 1)


def _check(
    url: str,
    record: dict[str, Any],
    receiver: Receiver,
    args: argparse.Namespace,
    killed_at: float | None,
) -> dict[str, Any]:
    db = connect(url)
    try:
        titles: dict[str, set[str]] = {}
        for key, title in db.execute(
            "SELECT e.key, v.title FROM versions v JOIN entries e ON e.id = v.entry_id"
        ):
            titles.setdefault(key, set()).add(title)
        repeats = db.value(
            "SELECT count(*) FROM versions v JOIN versions p ON p.entry_id = v.entry_id"
            " AND p.version = v.version - 1 AND p.content_hash = v.content_hash"
        )
        events = {r[0] for r in db.execute("SELECT event_id FROM outbox WHERE baseline = 0")}
        versions = db.value("SELECT count(*) FROM versions")
        nodes = db.rows("SELECT name, state FROM nodes ORDER BY started_at")
    finally:
        db.close()
    gaps, after_kill, hits = [], [], 0
    lost = Counter()
    for feed in record.values():
        times = [hit[0] for hit in feed["hits"]]
        hits += len(times)
        for a, b in itertools.pairwise(times):
            gaps.append(b - a)
            if killed_at and a <= killed_at <= b:
                after_kill.append(b - a)
        # versions served with a body to a node that lived to write them (an answer the
        # killed node received in its last moments is its own loss, not the store's)
        to_live = {
            str(version) for at, status, version, agent in feed["hits"]
            if status == 200 and not (killed_at and agent.endswith("-n2")
                                      and killed_at - 60 <= at <= killed_at)
        }  # fmt: skip
        for version, items in feed["versions"].items():
            where = "" if version in to_live else "_only_to_the_killed_node"
            for key, title, _edit in items:
                if key not in titles:
                    lost["items" + where] += 1
                elif title not in titles[key]:
                    lost["titles" + where] += 1
    delivered = set(receiver.ids)
    return {
        "polls": hits,
        "double_polls": sum(1 for g in gaps if g < 0.5 * args.interval),
        "shortest_gap_s": round(min(gaps), 2) if gaps else None,
        "longest_gap_after_kill_s": round(max(after_kill), 1) if after_kill else None,
        "versions": versions,
        "duplicate_versions": repeats,
        "lost_items": lost["items"],
        "lost_titles": lost["titles"],
        "lost_items_only_served_to_the_killed_node": lost["items_only_to_the_killed_node"],
        "lost_titles_only_served_to_the_killed_node": lost["titles_only_to_the_killed_node"],
        "events": len(events),
        "events_delivered": len(events & delivered),
        "events_never_delivered": len(events - delivered),
        "events_delivered_twice": sum(1 for n in receiver.ids.values() if n > 1),
        "nodes": nodes,
    }


def cost(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    url, pg = empty_database(args)
    results = {}
    for backend, database in (("sqlite", str(tmp / "cost.db")), ("postgresql", url)):
        server, base = feedserver.start(args.feeds)
        config = tmp / f"{backend}.toml"
        write_config(config, database, base, args, "", backend)
        node = start_node(config, "cost", tmp / f"{backend}.log")
        try:
            _first_listings(database, args.feeds)  # every feed's first listing is stored,
            time.sleep(args.interval + 5)  # and each has been asked again (a 304) since
            marks = [_mark(node.pid, database)]
            time.sleep(args.phase)  # quiet: every poll is a 304
            marks.append(_mark(node.pid, database))
            end = time.time() + args.phase
            while time.time() < end:  # changing: half the feeds every 10 s
                urlopen(f"{base}/_advance").read()
                time.sleep(10)
            marks.append(_mark(node.pid, database))
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=60)
            server.terminate()
        results[backend] = _costs(marks, backend == "postgresql")
    if pg is not None:
        pg.stop()
    return results


def _first_listings(database: str, feeds: int, wait: float = 900.0) -> None:
    """Until every feed's entries are stored (a cold pass on two cores takes a while)."""
    deadline = time.time() + wait
    while time.time() < deadline:
        time.sleep(2)
        try:
            db = connect(database, readonly=True)
        except Exception:  # the node has not created the schema yet
            continue
        try:
            done = db.value("SELECT count(DISTINCT source_id) FROM entries")
        except Exception:
            done = 0
        finally:
            db.close()
        if done >= feeds:
            return
    raise SystemExit(f"the first listings were not stored within {wait:.0f} s")


def _mark(pid: int, database: str) -> dict[str, float]:
    db = connect(database, readonly=True)
    try:
        polls = db.value("SELECT count(*) FROM fetches WHERE outcome = 'not_modified'")
        versions = db.value("SELECT count(*) FROM versions")
    finally:
        db.close()
    return {"cpu": tree_cpu(pid), "pg": postgres_cpu(), "304": polls, "versions": versions}


def _costs(marks: list[dict[str, float]], postgres: bool) -> dict[str, float]:
    start, quiet, busy = marks
    per_304 = (quiet["cpu"] - start["cpu"]) / max(1, quiet["304"] - start["304"])
    polls_304 = busy["304"] - quiet["304"]
    stored = max(1, busy["versions"] - quiet["versions"])
    per_version = (busy["cpu"] - quiet["cpu"] - per_304 * polls_304) / stored
    out = {
        "node_cpu_ms_per_304_poll": round(per_304 * 1000, 2),
        "node_cpu_ms_per_stored_version": round(per_version * 1000, 2),
        "versions_stored": stored,
        "polls_304": quiet["304"] - start["304"],
    }
    if postgres:
        server_304 = (quiet["pg"] - start["pg"]) / max(1, quiet["304"] - start["304"])
        server_version = (busy["pg"] - quiet["pg"] - server_304 * polls_304) / stored
        out["server_cpu_ms_per_304_poll"] = round(server_304 * 1000, 2)
        out["server_cpu_ms_per_stored_version"] = round(server_version * 1000, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("run", "cost"))
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--advance", type=float, default=10.0)
    parser.add_argument("--kill-after", type=float, default=0.0)
    parser.add_argument("--back-after", type=float, default=60.0)
    parser.add_argument(
        "--drain", type=float, default=900.0, help="run: wait at most this for delivery, s"
    )
    parser.add_argument("--phase", type=float, default=60.0, help="cost: seconds per phase")
    parser.add_argument("--database", help="an empty PostgreSQL database (default: a new one)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="multinode-"))
    result = (run if args.what == "run" else cost)(args, tmp)
    print(json.dumps({args.what: result}, indent=2))


if __name__ == "__main__":
    main()
