"""`aggregator run` as a service: a real subprocess, real signals, a real notify socket."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator import sdnotify
from tests import story
from tests.conftest import Harness

ROOT = Path(__file__).resolve().parent.parent
FAST = '[schedule]\nstartup_spread = "0.05s"\n'


def wait_for(check: Callable[[], object], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def start(harness: Harness, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    harness.config()
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "-c", str(harness.config_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str], limit: float = 15) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=limit)
    return proc.returncode, err


@pytest.fixture(name="notify_socket")
def _notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    yield sock, str(path)
    sock.close()


def test_sd_notify_ready_status_watchdog_and_stopping(
    harness: Harness, notify_socket: tuple[socket.socket, str]
) -> None:
    """Under a notify socket the daemon sends READY+STATUS, WATCHDOG pings, then STOPPING."""
    sock, path = notify_socket
    harness.extra = FAST
    harness.add("world", "/feed.xml", interval="0.5s")
    harness.server.serve("/feed.xml", story.rss(0))
    proc = start(harness, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"})
    try:
        first = sock.recv(4096).decode().split("\n")
        assert first[0] == "READY=1"
        assert first[1].startswith("STATUS=1 sources, 0 failing")
        pings = [sock.recv(4096).decode() for _ in range(3)]
        assert pings == ["WATCHDOG=1"] * 3
    finally:
        code, err = stop(proc)
    assert code == 0, err
    rest = []
    sock.settimeout(0.5)
    try:
        while True:
            rest.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    assert "STOPPING=1" in rest


def test_sd_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """An '@' NOTIFY_SOCKET is the abstract namespace; without one, notify is a no-op."""
    name = f"aggregator-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STATUS=hello", "READY=1")
        assert sock.recv(100) == b"STATUS=hello\nREADY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sdnotify.notify("READY=1")


def test_sighup_adds_and_removes_sources_and_survives_a_bad_config(harness: Harness) -> None:
    """SIGHUP starts added sources, stops removed ones (history kept); a bad config is ignored."""
    harness.extra = FAST
    harness.add("first", "/first.xml", interval="0.2s")
    harness.server.serve("/first.xml", story.rss(0))
    harness.server.serve("/second.xml", story.rss(1))
    proc = start(harness)
    try:
        wait_for(lambda: len(harness.server.hits("/first.xml")) >= 2)
        harness.sources = []
        harness.add("second", "/second.xml", interval="0.2s")
        harness.config()
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(harness.server.hits("/second.xml")) >= 2)
        time.sleep(0.3)  # a poll of "first" in flight during the reload may still land
        first_hits = len(harness.server.hits("/first.xml"))
        harness.config_path.write_text(harness.config_path.read_text() + "\nbogus = 1\n")
        proc.send_signal(signal.SIGHUP)
        seen = len(harness.server.hits("/second.xml"))
        wait_for(lambda: len(harness.server.hits("/second.xml")) >= seen + 3)
        assert len(harness.server.hits("/first.xml")) == first_hits
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "config.reload_failed" in err and "bogus: unknown key" in err
    rows = harness.rows(
        "SELECT s.name, s.active, count(e.id) AS entries FROM sources s"
        " LEFT JOIN entries e ON e.source_id = s.id GROUP BY s.id ORDER BY s.name"
    )
    assert rows == [
        {"name": "first", "active": 0, "entries": 3},
        {"name": "second", "active": 1, "entries": 4},
    ]


@pytest.mark.parametrize(("grace", "finished"), [("5s", True), ("0.3s", False)])
def test_sigterm_mid_poll_exits_cleanly_with_the_database_intact(
    harness: Harness, grace: str, finished: bool
) -> None:
    """SIGTERM during a slow fetch waits up to shutdown_grace, then cancels; exit 0, DB intact."""
    harness.extra = FAST + f'shutdown_grace = "{grace}"\n'
    harness.add("slow", "/slow.xml", interval="0.1s")
    harness.server.serve("/slow.xml", story.rss(0))
    proc = start(harness)
    try:
        wait_for(lambda: len(harness.server.hits("/slow.xml")) >= 1)
        harness.server.serve("/slow.xml", story.rss(1), delay=1.5)
        wait_for(lambda: harness.server.active > 0)
    finally:
        began = time.monotonic()
        code, err = stop(proc)
    took = time.monotonic() - began
    assert code == 0, err
    assert (took < 1.4) != finished, took
    conn = sqlite3.connect(harness.db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        outcomes = [r[0] for r in conn.execute("SELECT outcome FROM fetches ORDER BY id")]
        state = conn.execute("SELECT state FROM daemon_state").fetchone()
    finally:
        conn.close()
    assert outcomes == (["changed", "changed"] if finished else ["changed"])
    assert state == ("stopped",)
