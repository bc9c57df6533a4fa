"""Several `aggregator run` processes on one PostgreSQL: each source polled by one node at a
time, nothing lost or stored twice, every event delivered, a node killed (-9) mid-run."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.conftest import Harness, query_rows
from tests.receivers import WebhookReceiver
from tests.server import TestServer

ROOT = Path(__file__).resolve().parent.parent
FEEDS = 10
INTERVAL = 1.0
LEASE = 3.0


def feed(name: int, revision: int) -> str:
    """Feed ``name`` at ``revision``: one new item per revision, the newest twelve listed."""
    items = "".join(
        f'<item><guid isPermaLink="false">f{name}-r{r}</guid>'
        f"<title>feed {name} item {r}</title>"
        f"<description>Revision {r} of feed {name}.</description></item>"
        for r in range(revision, max(-1, revision - 12), -1)
    )
    head = f'<?xml version="1.0"?><rss version="2.0"><channel><title>f{name}</title>'
    return f"{head}{items}</channel></rss>"


class Publisher:
    """Moves every feed to a new revision every ``period`` seconds, in a thread."""

    def __init__(self, server: TestServer, period: float = 0.7) -> None:
        self.server, self.period = server, period
        self.revision = 0
        self.stop = threading.Event()
        self.publish()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def publish(self) -> None:
        for name in range(FEEDS):
            self.server.serve(f"/f/{name}.xml", feed(name, self.revision))

    def run(self) -> None:
        while not self.stop.wait(self.period):
            self.revision += 1
            self.publish()


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()
    yield rec
    rec.stop()


def config(harness: Harness, url: str, receiver: WebhookReceiver) -> Path:
    harness.extra = (
        f'[schedule]\nstartup_spread = "0.3s"\nlease = "{LEASE}s"\nshutdown_grace = "10s"\n'
        '[fetch]\nper_host = 32\ntimeout = "5s"\n'
        '[notify]\ncheck_every = "1s"\n'
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "webhook"\nname = "hook"\nurl = "{receiver.url()}"\n'
    )
    for name in range(FEEDS):
        harness.add(f"f{name}", f"/f/{name}.xml", interval=f"{INTERVAL}s", adaptive=False)
    harness.db_path = url
    harness.config()
    return harness.config_path


def node(config_path: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config_path)],
        cwd=ROOT,
        env={**os.environ, "AGGREGATOR_NODE": name, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def outbox_events(url: str) -> list[str]:
    return [r["event_id"] for r in query_rows(url, "SELECT event_id FROM outbox")]


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (proc.returncode, err[-3000:])
    return err


def test_three_nodes_share_the_sources_and_survive_a_kill(
    tmp_path: Path, server: TestServer, receiver: WebhookReceiver
) -> None:
    """Three nodes poll ten changing feeds: no source polled twice within an interval, no
    version stored twice, every served item stored, every event delivered; a node killed
    with SIGKILL has its sources polled by the others within lease + interval."""
    url = pg.server().fresh()
    config_path = config(Harness(tmp_path, server, url), url, receiver)
    publisher = Publisher(server)
    publisher.thread.start()
    nodes = {name: node(config_path, name) for name in ("n1", "n2", "n3")}
    try:
        deadline = time.time() + 60
        while min(len(server.hits(f"/f/{n}.xml")) for n in range(FEEDS)) < 4:
            assert time.time() < deadline, "the nodes did not start polling"
            time.sleep(0.2)
        nodes["n2"].send_signal(signal.SIGKILL)
        nodes["n2"].wait(10)
        killed_at = time.time()
        time.sleep(6)
        nodes["n2"] = node(config_path, "n2")  # back later
        time.sleep(4)
    finally:
        publisher.stop.set()
        time.sleep(2 * INTERVAL + 0.5)  # the last revision is polled
        deadline = time.time() + 30  # and its events delivered
        while set(receiver.ids()) < set(outbox_events(url)) and time.time() < deadline:
            time.sleep(0.2)
        logs = {name: stop(proc) for name, proc in nodes.items()}  # each ran to the end

    hits = {n: server.hits(f"/f/{n}.xml") for n in range(FEEDS)}
    gaps = [b.at - a.at for n in hits for a, b in itertools.pairwise(hits[n])]
    # the jitter keeps a gap above 0.9 x interval; two nodes at once would come closer
    assert min(gaps) >= 0.5 * INTERVAL, sorted(gaps)[:5]
    after_kill = [b.at - a.at for n in hits for a, b in itertools.pairwise(hits[n])
                  if a.at <= killed_at <= b.at]  # fmt: skip
    assert max(after_kill) <= LEASE + INTERVAL + 1.5, after_kill

    served = {
        m for n in hits for h in hits[n] if h.status == 200
        for m in re.findall(r">(f\d+-r\d+)</guid>", h.body.decode())
    }  # fmt: skip
    stored = {r["key"] for r in query_rows(url, "SELECT key FROM entries")}
    assert served and served <= stored  # every item any node received is stored
    versions = query_rows(
        url, "SELECT entry_id, version, content_hash FROM versions ORDER BY entry_id, version"
    )
    repeats = [
        (a["entry_id"], b["version"])
        for a, b in itertools.pairwise(versions)
        if a["entry_id"] == b["entry_id"] and a["content_hash"] == b["content_hash"]
    ]
    assert repeats == []
    events = outbox_events(url)
    got = Counter(receiver.ids())
    assert set(got) == set(events)  # every event delivered
    resent = sum(n - 1 for n in got.values())
    assert resent <= 8  # at most the sends n2 had in flight when it was killed
    polled_by = query_rows(url, "SELECT name, state FROM nodes ORDER BY started_at")
    assert [r["name"] for r in polled_by] == ["n1", "n2", "n3", "n2"] or len(polled_by) == 4
    assert all("Traceback" not in err for err in logs.values()), logs
    print(
        "multinode figures:",
        {"polls": sum(len(h) for h in hits.values()), "min_gap": round(min(gaps), 3),
         "max_gap_after_kill": round(max(after_kill), 3), "items": len(served),
         "events": len(events), "resent": resent},
    )  # fmt: skip


def test_the_per_host_cap_holds_across_nodes(
    tmp_path: Path, server: TestServer, receiver: WebhookReceiver
) -> None:
    """Two nodes, six slow feeds on one host, per_host = 1: never two requests at once."""
    url = pg.server().fresh()
    harness = Harness(tmp_path, server, url)
    harness.extra = (
        '[schedule]\nstartup_spread = "0.1s"\nlease = "5s"\n[fetch]\nper_host = 1\ntimeout = "5s"\n'
    )
    for name in range(6):
        server.serve(f"/slow/{name}.xml", feed(name, 0), delay=0.2)
        harness.add(f"s{name}", f"/slow/{name}.xml", interval="1s", adaptive=False)
    harness.config()
    nodes = [node(harness.config_path, name) for name in ("a", "b")]
    try:
        deadline = time.time() + 60
        while min(len(server.hits(f"/slow/{n}.xml")) for n in range(6)) < 3:
            assert time.time() < deadline, "the nodes did not poll every feed"
            time.sleep(0.2)
    finally:
        for proc in nodes:
            stop(proc)
    assert server.max_active == 1


def test_nodes_starting_together_on_an_empty_database_share_one_set_of_sources() -> None:
    """Four nodes writing the same 300 configured sources at the same instant (nodes started
    together on a new database): none fails, and each name is one source with one id."""
    from aggregator.store import SourceSpec, Store

    url = pg.server().fresh()
    Store.open(url).close()  # the schema exists (its creation has a lock of its own)
    specs = [SourceSpec(f"s{n}", "feed", f"http://feeds.test/{n}.xml", 60) for n in range(300)]
    start = threading.Barrier(4)
    results: list[dict[str, int] | BaseException] = []

    def one_node() -> None:
        store = Store.open(url)
        try:
            start.wait()
            results.append(store.sync_sources(specs))
        except BaseException as exc:  # reported below
            results.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=one_node) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len(results) == 4 and all(r == results[0] for r in results)
    rows = query_rows(url, "SELECT count(*) AS n, count(DISTINCT name) AS names FROM sources")
    assert rows == [{"n": 300, "names": 300}]


def test_a_node_whose_source_sync_deadlocks_with_another_writes_it_again() -> None:
    """A node (re)starting with a changed config while another node holds some of the same
    source rows: PostgreSQL breaks the deadlock by rolling one back; the node's sync runs
    again and succeeds instead of the node exiting with "deadlock detected"."""
    import psycopg

    from aggregator.store import SourceSpec, Store

    url = pg.server().fresh()
    store = Store.open(url)
    names = [f"s{n}" for n in range(10)]
    store.sync_sources([SourceSpec(n, "feed", f"http://feeds.test/{n}.xml", 60) for n in names])
    other = psycopg.connect(url)  # another node's transaction, in the opposite order
    other.execute("UPDATE sources SET interval_seconds = 61 WHERE name = 's9'")
    done: list[dict[str, int] | BaseException] = []

    def sync() -> None:
        specs = [SourceSpec(n, "feed", f"http://feeds.test/{n}.xml", 120) for n in names]
        try:
            done.append(store.sync_sources(specs))  # waits for s9
        except BaseException as exc:  # reported below
            done.append(exc)

    thread = threading.Thread(target=sync)
    thread.start()
    time.sleep(0.5)
    try:
        other.execute("UPDATE sources SET interval_seconds = 61 WHERE name = 's0'")  # a cycle
        other.commit()
    except psycopg.errors.DeadlockDetected:
        other.rollback()  # the server chose this side: the node's sync goes on
    thread.join(30)
    other.close()
    store.close()
    assert len(done) == 1 and not isinstance(done[0], BaseException), done
    rows = query_rows(url, "SELECT DISTINCT interval_seconds AS i FROM sources")
    assert rows == [{"i": 120}]
