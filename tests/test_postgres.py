"""Choosing PostgreSQL by URL, its faults (bad URL, wrong password, a server restart), one
daemon per SQLite file, nodes with different configs, and moving a history up with copy-to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests import pg, story
from tests.conftest import Harness, query_rows, write_config
from tests.server import TestServer

ROOT = Path(__file__).resolve().parent.parent


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip


def test_an_unsupported_url_scheme_names_the_ones_that_are(tmp_path: Path) -> None:
    """mysql:// in the config or in --db is refused naming what works; no directory appears."""
    config = tmp_path / "aggregator.toml"
    config.write_text('[storage]\ndatabase = "mysql://u@h/db"\n')
    checked = run("config", "check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 2
    assert "mysql://" in checked.stderr and "postgresql://" in checked.stderr
    read = run("sources", "--db", "sqlite3://x.db", cwd=tmp_path)
    assert read.returncode == 2 and "postgresql://" in read.stderr, read.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aggregator.toml"]


def test_a_postgresql_url_is_never_taken_for_a_file_path(tmp_path: Path) -> None:
    """An unreachable server is exit 2 with the cause; no 'postgresql:' directory is made."""
    url = f"postgresql://agg@/agg?host={tmp_path / 'nowhere'}"
    config = tmp_path / "aggregator.toml"
    write_config(config, [{"name": "a", "url": "http://127.0.0.1:9/f"}], db=url)  # type: ignore[arg-type]
    polled = run("poll", "--config", str(config), cwd=tmp_path)
    assert polled.returncode != 0
    assert "cannot connect to postgresql://agg@/agg" in polled.stderr, polled.stderr
    assert not (tmp_path / "postgresql:").exists() and not list(tmp_path.glob("*.db"))


def test_a_wrong_password_database_or_host_says_why_with_the_password_masked(
    tmp_path: Path,
) -> None:
    """Wrong password, database or host: exit 2, the cause named, the password never shown."""
    server = pg.server()
    wrong = f"postgresql://{pg.PASSWORD_USER}:hunter2-wrong@/postgres?host={server.socket_dir}"
    out = run("sources", "--db", wrong, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "password authentication failed" in out.stderr
    assert "hunter2-wrong" not in out.stderr + out.stdout and ":***@" in out.stderr
    nodb = f"postgresql://agg@/no_such_db?host={server.socket_dir}"
    out = run("sources", "--db", nodb, cwd=tmp_path)
    assert out.returncode == 2 and 'database "no_such_db" does not exist' in out.stderr
    nohost = "postgresql://agg:s3cret-x@127.0.0.1:9/agg?connect_timeout=2"
    out = run("status", "--db", nohost, cwd=tmp_path)
    assert out.returncode == 2 and "127.0.0.1" in out.stderr and "s3cret-x" not in out.stderr
    right = f"postgresql://{pg.PASSWORD_USER}:{pg.PASSWORD}@/{pg.TEMPLATE}?host={server.socket_dir}"
    out = run("sources", "--db", right, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_a_second_daemon_on_one_sqlite_file_refuses_naming_the_first(
    tmp_path: Path, server: TestServer
) -> None:
    """Two `aggregator run` on one SQLite file: the second exits, naming the first's pid."""
    server.serve("/feed.xml", story.rss(0))
    config = write_config(
        tmp_path / "aggregator.toml",
        [{"name": "world", "url": server.url("/feed.xml"), "interval": "1s"}],
        db=tmp_path / "history.db",
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 30
        while not server.hits("/feed.xml"):
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        second = run("run", "--config", str(config), cwd=tmp_path)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    assert second.returncode != 0
    assert f"pid {first.pid}" in second.stderr and "running since" in second.stderr
    assert "PostgreSQL" in second.stderr, second.stderr
    assert first.returncode == 0


def test_two_nodes_with_different_configs_warn_and_keep_each_others_sources(
    tmp_path: Path, server: TestServer
) -> None:
    """Node A has sources a and shared, node B b and shared: each warns naming what the other
    has that it does not; neither disables the other's sources or their history."""
    url = pg.server().fresh()
    for name in ("a", "b", "shared"):
        server.serve(f"/{name}.xml", story.rss(0))

    def config(path: Path, names: list[str]) -> Path:
        sources = [{"name": n, "url": server.url(f"/{n}.xml"), "interval": "1s"} for n in names]
        extra = '[schedule]\nstartup_spread = "0.1s"\n'
        return write_config(path, sources, db=url, extra=extra)  # type: ignore[arg-type]

    config_a = config(tmp_path / "a.toml", ["a", "shared"])
    config_b = config(tmp_path / "b.toml", ["b", "shared"])
    node_a = start_node(config_a, "A")
    try:
        wait_for(lambda: server.hits("/a.xml"), node_a)
        node_b = start_node(config_b, "B")
        try:
            wait_for(lambda: server.hits("/b.xml") and len(server.hits("/a.xml")) > 2, node_b)
            time.sleep(11)  # both have a heartbeat with their source lists
            node_a.send_signal(signal.SIGHUP)  # A's reload sees B running: B's stay active
            time.sleep(2)
        finally:
            err_b = stop_node(node_b)
    finally:
        err_a = stop_node(node_a)
    assert "cluster.config_differs" in err_b and '"sources_not_here": ["a"]' in err_b, err_b
    assert "cluster.config_differs" in err_a and '"sources_not_here": ["b"]' in err_a, err_a
    active = {r["name"]: r["active"] for r in query_rows(url, "SELECT name, active FROM sources")}
    assert active == {"a": 1, "b": 1, "shared": 1}
    entries = query_rows(url, "SELECT s.name FROM entries e JOIN sources s ON s.id = e.source_id")
    assert {r["name"] for r in entries} == {"a", "b", "shared"}


def start_node(config: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AGGREGATOR_NODE": name, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def stop_node(node: subprocess.Popen[str]) -> str:
    node.send_signal(signal.SIGTERM)
    _, err = node.communicate(timeout=30)
    assert node.returncode == 0, err[-2000:]
    return err


def wait_for(condition: Callable[[], object], node: subprocess.Popen[str]) -> None:
    deadline = time.time() + 30
    while not condition():
        assert time.time() < deadline and node.poll() is None, "the node did not get there"
        time.sleep(0.1)


def test_a_server_restart_under_a_running_node_loses_nothing(
    tmp_path: Path, server: TestServer
) -> None:
    """PostgreSQL restarts while a node polls: the node logs it, reconnects with backoff,
    keeps what was written and stores what comes after; status says it was away."""
    pgs = pg.server()
    url = pgs.fresh()
    server.serve("/feed.xml", story.rss(0))
    config = write_config(
        tmp_path / "aggregator.toml",
        [{"name": "world", "url": server.url("/feed.xml"), "interval": "0.5s", "adaptive": False}],
        db=url,  # type: ignore[arg-type]
        extra='[schedule]\nstartup_spread = "0.1s"\n',
    )
    node = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 30
        while not query_rows(url, "SELECT id FROM versions"):
            assert time.time() < deadline and node.poll() is None
            time.sleep(0.2)
        before = query_rows(url, "SELECT count(*) AS n FROM versions")[0]["n"]
        pgs.restart()
        server.serve("/feed.xml", story.rss(1))  # changes while the node reconnects
        deadline = time.time() + 60
        while query_rows(url, "SELECT count(*) AS n FROM versions")[0]["n"] <= before:
            assert time.time() < deadline and node.poll() is None, "nothing stored after"
            time.sleep(0.5)
        time.sleep(11)  # a heartbeat after the reconnection
        status = run("status", "--db", url, cwd=tmp_path)
    finally:
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=30)
    assert node.returncode == 0, err[-2000:]
    assert "database.lost" in err and "database.reconnected" in err
    assert "database up (back after" in status.stdout, status.stdout
    kinds = [r["kind"] for r in query_rows(url, "SELECT kind FROM changes ORDER BY id")]
    assert kinds[:3] == ["new"] * 3 and sorted(kinds[3:]) == ["changed", "changed", "new"]
    # epoch 0's three stories, then epoch 1's changes, each once


def test_copy_to_moves_a_whole_history_and_the_copy_answers_with_304s(
    harness: Harness,
) -> None:
    """copy-to copies every row under the same ids with the validators; a daemon on the
    copy asks conditionally at once (304s); a second copy into it is refused."""
    harness.add("world", "/feed.xml")
    harness.extra = (
        '[[sinks]]\nkind = "jsonl"\nname = "log"\npath = "events.jsonl"\n'
        "send_first_listing = true\n"
    )
    for epoch in range(3):
        harness.server.serve("/feed.xml", story.rss(epoch))
        harness.poll()
    target = pg.server().create()
    copied = run("copy-to", target, "--db", str(harness.db_path), cwd=harness.tmp)
    assert copied.returncode == 0, copied.stderr
    assert "row counts match" in copied.stdout and "sampled rows identical" in copied.stdout
    for table in ("sources", "entries", "versions", "changes", "outbox", "deliveries"):
        sql = f"SELECT * FROM {table} ORDER BY id"
        ours = [{k: v for k, v in r.items() if k != "search"} for r in query_rows(target, sql)]
        theirs = query_rows(harness.db_path, sql)
        if table in ("sources", "deliveries"):  # claims and leases are not copied
            for row in theirs:
                row.update({k: None for k in ("claimed_by", "lease_until") if k in row})
        assert ours == theirs, table
    again = run("copy-to", target, "--db", str(harness.db_path), cwd=harness.tmp)
    assert again.returncode == 2 and "is not empty" in again.stderr

    hits = len(harness.server.hits("/feed.xml"))
    harness.db_path = target
    assert [r.outcome for r in harness.poll()] == ["not_modified"]
    [request] = harness.server.hits("/feed.xml")[hits:]
    assert request.status == 304 and request.headers.get("If-None-Match")


def test_retention_runs_on_one_node_at_a_time() -> None:
    """Two nodes' connections: the second cannot take the retention chore until the first
    ends it (or its connection goes, as when a node dies)."""
    from aggregator.store.cluster import end_chore, take_chore
    from aggregator.store.db import connect

    url = pg.server().fresh()
    first, second = connect(url), connect(url)
    try:
        assert take_chore(first, "retention") and not take_chore(second, "retention")
        end_chore(first, "retention")
        assert take_chore(second, "retention")
        second.close()  # a node that dies lets go with its connection
        assert take_chore(first, "retention")
    finally:
        first.close()
