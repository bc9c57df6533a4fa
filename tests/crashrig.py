"""Kill the daemon at random moments against an evolving server, then check nothing was lost.

Used by ``tests/test_crash.py`` (a few kills) and ``benchmarks/crash_soak.py``
(50+). The server's feeds evolve on a clock: at epoch ``e`` item ``j`` is at
revision ``e // (j + 1)`` and new items appear every few epochs, so every
title names its item and revision. After the kills the evolution stops, the
daemon runs until it has caught up, and the checks are:

* ``PRAGMA integrity_check`` is ``ok`` and no foreign key is broken;
* per entry, versions are numbered 1..n without gaps and their revisions
  strictly increase (each state stored exactly once, never twice), ending at
  the server's final revision (complete);
* every change row has exactly one outbox row, and no change event lacks one;
* every outbox event reached both sinks, a jsonl file and a webhook receiver
  that is down for the first half of the kills: each event id arrives, in
  outbox order of first arrival, and any repeat carries the same id (a kill
  between send and ack re-sends), none is lost.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.sax.saxutils import escape

from tests.receivers import WebhookReceiver
from tests.server import TestServer

ROOT = Path(__file__).resolve().parent.parent
FEEDS = 3
ITEMS = 6
TITLE = re.compile(r"^feed (\d+) item (\d+) rev (\d+)$")


def revision(item: int, epoch: int) -> int:
    return epoch // (item + 1)


def feed_body(feed: int, epoch: int) -> str:
    """The RSS document of ``feed`` at ``epoch``, newest item first."""
    count = min(ITEMS, 2 + epoch // 3)
    items = "".join(
        f'<item><guid isPermaLink="false">f{feed}-{j}</guid>'
        f"<title>{escape(f'feed {feed} item {j} rev {revision(j, epoch)}')}</title>"
        f"<description>body {revision(j, epoch)}</description>"
        f"<pubDate>Thu, 10 Mar 2022 {j:02d}:00:00 GMT</pubDate></item>"
        for j in reversed(range(count))
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>feed {feed}</title>'
        f"{items}</channel></rss>"
    )


class Evolver:
    """Advances every feed one epoch every ``period`` seconds until stopped."""

    def __init__(self, server: TestServer, period: float = 0.15) -> None:
        self.server = server
        self.period = period
        self.epoch = 0
        self.stopped = threading.Event()
        self.publish()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def publish(self) -> None:
        for feed in range(FEEDS):
            self.server.serve(f"/crash/{feed}.xml", feed_body(feed, self.epoch))

    def _run(self) -> None:
        while not self.stopped.wait(self.period):
            self.epoch += 1
            self.publish()

    def start(self) -> Evolver:
        self.thread.start()
        return self

    def stop(self) -> int:
        self.stopped.set()
        self.thread.join()
        return self.epoch


def write_config(tmp: Path, server: TestServer, hook: WebhookReceiver | None = None) -> Path:
    lines = [
        f'[storage]\ndatabase = "{tmp / "crash.db"}"\n',
        '[notify]\nretry_base = "50ms"\nretry_max = "300ms"\ncheck_every = "100ms"\n',
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "file"\npath = "{tmp / "events.jsonl"}"\n',
    ]
    if hook is not None:
        lines.append(
            "[[sinks]]\nsend_first_listing = true\n"
            f'kind = "webhook"\nname = "hook"\nurl = "{hook.url()}"\n'
        )
    for feed in range(FEEDS):
        url = server.url(f"/crash/{feed}.xml")
        lines.append(f'[[sources]]\nname = "c{feed}"\nurl = "{url}"\ninterval = "1s"\n')
    path = tmp / "crash.toml"
    path.write_text("\n".join(lines))
    return path


def start_daemon(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_repeatedly(
    config: Path, kills: int, rng: random.Random, hook: WebhookReceiver | None = None
) -> None:
    """Start the daemon and SIGKILL it at a random moment, ``kills`` times.

    The webhook receiver is down for the first half of the kills.
    """
    if hook is not None:
        hook.stop()
    for n in range(kills):
        if hook is not None and n == kills // 2:
            hook.start()
        proc = start_daemon(config)
        wait_for_a_poll(config.parent / "crash.db", after=fetch_count(config.parent / "crash.db"))
        time.sleep(rng.uniform(0.0, 1.5))  # the daemon is polling now: kill at a random moment
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def fetch_count(db: Path) -> int:
    """Rows in ``fetches`` (0 before the database exists)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM fetches").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def wait_for_a_poll(db: Path, after: int, timeout: float = 20.0) -> None:
    """Until this run of the daemon has stored a poll (its start-up depends on the load)."""
    deadline = time.monotonic() + timeout
    while fetch_count(db) <= after and time.monotonic() < deadline:
        time.sleep(0.05)


def catch_up(config: Path, final_epoch: int, timeout: float = 30.0) -> None:
    """Run the daemon until every feed's final state is stored, then stop it with SIGTERM."""
    proc = start_daemon(config)
    db = config.parent / "crash.db"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if db.exists() and _caught_up(db, final_epoch) and _delivered(db):
                return
        raise AssertionError("the daemon did not store the final state in time")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _caught_up(db: Path, final_epoch: int) -> bool:
    want = {
        f"f{feed}-{j}": f"feed {feed} item {j} rev {revision(j, final_epoch)}"
        for feed in range(FEEDS)
        for j in range(min(ITEMS, 2 + final_epoch // 3))
    }
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        have = dict(conn.execute("SELECT key, title FROM entries").fetchall())
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return all(have.get(k) == v for k, v in want.items())


def _delivered(db: Path) -> bool:
    """Every outbox event delivered to every sink."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        sinks = conn.execute("SELECT count(*) FROM sinks").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        done = conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        ).fetchone()[0]
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return sinks > 0 and done == sinks * events


def check_sinks(db: Path, jsonl: Path, hook: WebhookReceiver | None) -> dict[str, int]:
    """Each sink got every outbox event, first arrivals in each story's order (the jsonl
    file: in outbox order, one at a time); repeats share ids."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT event_id, COALESCE(entry_id, -source_id) FROM outbox ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    produced = [r[0] for r in rows]
    story = dict(rows)
    received = {"file": [json.loads(line)["id"] for line in jsonl.read_text().splitlines()]}
    if hook is not None:
        received["hook"] = [r.json["id"] for r in hook.received if r.status == 200]
    report = {"events": len(produced)}
    for name, ids in received.items():
        first_seen = list(dict.fromkeys(ids))
        if name == "file":
            assert first_seen == produced, f"{name}: events lost, extra or out of order"
        else:
            assert sorted(first_seen) == sorted(produced), f"{name}: events lost or extra"
            assert _by_story(first_seen, story) == _by_story(produced, story), (
                f"{name}: a story's events out of version order"
            )
        report[f"{name}_duplicates"] = len(ids) - len(first_seen)
    return report


def _by_story(ids: list[str], story: dict[str, int]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for event_id in ids:
        grouped.setdefault(story[event_id], []).append(event_id)
    return grouped


def check(db: Path, final_epoch: int) -> dict[str, int]:
    """Run every nothing-lost check; return counts for the report."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        versions = conn.execute(
            "SELECT e.key, v.version, v.title FROM versions v JOIN entries e ON e.id = v.entry_id"
            " ORDER BY e.key, v.version"
        ).fetchall()
        by_entry: dict[str, list[tuple[int, int]]] = {}
        for key, number, title in versions:
            match = TITLE.match(title)
            assert match, f"unexpected title {title!r}"
            by_entry.setdefault(key, []).append((number, int(match.group(3))))
        for key, seq in by_entry.items():
            numbers = [n for n, _ in seq]
            revs = [r for _, r in seq]
            assert numbers == list(range(1, len(seq) + 1)), f"{key}: version gaps {numbers}"
            assert revs == sorted(set(revs)), f"{key}: a state stored twice or out of order {revs}"
            item = int(key.rsplit("-", 1)[1])
            assert revs[-1] == revision(item, final_epoch), f"{key}: final state missing"
        unmatched = conn.execute(
            "SELECT c.id, count(o.id) FROM changes c LEFT JOIN outbox o ON o.change_id = c.id"
            " GROUP BY c.id HAVING count(o.id) != 1"
        ).fetchall()
        assert unmatched == [], f"changes without exactly one outbox row: {unmatched[:5]}"
        orphans = conn.execute(
            "SELECT count(*) FROM outbox WHERE type = 'change' AND change_id IS NULL"
        ).fetchone()[0]
        assert orphans == 0
        changes = conn.execute("SELECT count(*) FROM changes").fetchone()[0]
    finally:
        conn.close()
    return {"entries": len(by_entry), "versions": len(versions), "changes": changes}


def run(tmp: Path, kills: int, seed: int = 7) -> dict[str, int]:
    """The whole scenario; returns the counts the checks found."""
    server = TestServer().start()
    hook = WebhookReceiver()
    try:
        config = write_config(tmp, server, hook)
        evolver = Evolver(server).start()
        kill_repeatedly(config, kills, random.Random(seed), hook)
        final = evolver.stop()
        catch_up(config, final)
        counts = check(tmp / "crash.db", final)
        delivered = check_sinks(tmp / "crash.db", tmp / "events.jsonl", hook)
        return {"kills": kills, "final_epoch": final, **counts, **delivered}
    finally:
        hook.stop()
        server.stop()
