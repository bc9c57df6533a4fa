"""The worker boundary: parses run in supervised processes, bounded in memory and time.

Each test drives the real pool (pebble, forkserver, RLIMIT_AS in the workers).
The pass-level tests run ``poll_once`` against the hostile server, with a
victim source whose parse is made to hit a limit (or whose worker is killed)
and a control source that must be unaffected.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aggregator.config import ParseConfig
from aggregator.errors import ParseError
from aggregator.sandbox import ParsePool, ParseTask, run_task
from tests import hostile_server as hs
from tests.server import TestServer
from tests.test_hostile import CONTROL_1, CONTROL_2, GOOD, Rig

ROOT = Path(__file__).resolve().parent.parent


def talks_feed(items: int, *, broken: bool = False, filler: int = 0) -> bytes:
    """An RSS document of ``items`` posts on the talks; ``broken`` makes expat give up."""
    pad = "x" * filler
    body = "".join(
        f"<item><guid>talks-{i}</guid><title>Talks, day {i}: delegations meet again</title>"
        f"<description>Negotiators met at the ministry for round {i} {pad}</description></item>"
        for i in range(items)
    )
    tail = "<broken>" if broken else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Ceasefire talks</title>{body}{tail}</channel></rss>"
    ).encode()


def task(body: bytes) -> ParseTask:
    return ParseTask(kind="feed", body=body, url="http://127.0.0.1/feed", headers={})


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def workers_of_this_process() -> set[int]:
    """Parse workers: grandchildren of the test process (children of the fork server)."""
    direct = {int(p) for p in _children(os.getpid())}
    return descendants(os.getpid()) - direct


def _children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def test_a_parse_in_a_worker_gives_what_the_parser_gives_in_process() -> None:
    pool = ParsePool(ParseConfig(workers=2))
    body = talks_feed(30)
    try:
        remote = asyncio.run(pool.parse(task(body)))
    finally:
        pool.close()
    local = run_task(task(body))
    assert [s.item for s in remote.snapshots] == [s.item for s in local.snapshots]
    assert [s.content_hash for s in remote.snapshots] == [s.content_hash for s in local.snapshots]
    assert remote.snapshots[3].texts["title"] == "Talks, day 3: delegations meet again"


def json_bomb(lists: int) -> bytes:
    """A small JSON document that is large in memory: each 3-byte ``[],`` is a 56-byte list."""
    return b'{"version": "https://jsonfeed.org/version/1.1", "items": [' + b"[]," * lists + b"[]]}"


def test_a_parse_past_the_memory_limit_fails_with_the_limit_named_and_the_pool_lives_on() -> None:
    pool = ParsePool(ParseConfig(workers=1, memory_limit="96MiB"))
    huge = json_bomb(1_500_000)  # 4.5 MB on the wire, over 100 MB parsed
    try:
        with pytest.raises(ParseError) as failed:
            asyncio.run(pool.parse(task(huge)))
        after = asyncio.run(pool.parse(task(talks_feed(3))))
    finally:
        pool.close()
    assert "96 MiB" in str(failed.value) and "[parse] memory_limit" in str(failed.value)
    assert len(after.snapshots) == 3


def test_a_parse_past_the_time_limit_is_stopped_and_the_worker_replaced() -> None:
    pool = ParsePool(ParseConfig(workers=1, time_limit="0.3s"))
    slow = talks_feed(6000, broken=True)  # feedparser's loose parser: seconds
    try:
        asyncio.run(pool.parse(task(talks_feed(1))))  # the worker is up
        first_pids = set(pool.pids())
        started = time.monotonic()
        with pytest.raises(ParseError) as failed:
            asyncio.run(pool.parse(task(slow)))
        elapsed = time.monotonic() - started
        after = asyncio.run(pool.parse(task(talks_feed(2))))
        pids = pool.pids()
    finally:
        pool.close()
    assert "took longer than 0.3s ([parse] time_limit)" in str(failed.value)
    assert elapsed < 5, f"the stuck parse held the caller {elapsed:.1f}s"
    assert len(after.snapshots) == 2
    assert len(first_pids) == 1 and len(pids) == 1 and set(pids) != first_pids


@pytest.fixture(name="hostile")
def _hostile() -> hs.HostileServer:
    server = hs.HostileServer().start()
    yield server
    server.stop()


def served_then(body: bytes, event: threading.Event, delay: float) -> hs.Handler:
    """Answer ``body`` after ``delay`` seconds, then set ``event``."""

    async def handler(request: hs.RawRequest, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        head = hs.head_bytes(200, {"Content-Type": "application/rss+xml"})
        writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        event.set()

    return handler


def test_a_worker_killed_mid_parse_fails_its_source_and_the_pass_completes(
    tmp_path: Path, hostile: hs.HostileServer
) -> None:
    rig = Rig(tmp_path, hostile)
    served = threading.Event()
    killed: list[int] = []

    def killer() -> None:
        if served.wait(20):
            time.sleep(0.3)  # the worker is now deep in feedparser's loose parser
            for pid in workers_of_this_process():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    slow = talks_feed(1500, broken=True)
    thread = threading.Thread(target=killer)
    thread.start()
    results, _ = rig.turn_hostile(served_then(slow, served, delay=0.3))
    thread.join()
    victim = results["victim"]
    assert killed, "no worker was running"
    assert not victim.ok
    assert "parse worker was killed by SIGKILL" in (victim.error or "")
    assert "SIGKILL" in (rig.last_fetch()["error"] or "")
    assert rig.victim_row()["consecutive_failures"] == 1
    assert workers_of_this_process() == set(), "a worker outlived its pass"
    # the next pass works: the victim is healthy again and its entries are all there
    hostile.route("/victim", hs.respond(200, GOOD))
    hostile.route("/control", hs.respond(200, CONTROL_2))
    again = rig.poll()
    assert again["victim"].ok and again["control"].ok
    assert rig.victim_row()["consecutive_failures"] == 0
    assert CONTROL_1 and rig.rows("SELECT count(*) AS n FROM entries")[0]["n"] == 5


def test_a_worker_dying_before_it_took_its_task_restarts_the_pool_not_the_daemon() -> None:
    # Receiving a 48 MB body needs its pickle and the bytes object, past a 64 MiB
    # allowance: the worker dies before acknowledging the task, and pebble gives the pool up.
    pool = ParsePool(ParseConfig(workers=1, memory_limit="64MiB"))
    try:
        with pytest.raises(ParseError) as failed:
            asyncio.run(pool.parse(task(talks_feed(2, filler=48 * 2**20))))
        pool.config = ParseConfig(workers=1)  # the next pool may use more
        after = asyncio.run(pool.parse(task(talks_feed(2))))
    finally:
        pool.close()
    assert "the parse worker" in str(failed.value) and "nothing was stored" in str(failed.value)
    assert len(after.snapshots) == 2


def test_an_unexpected_error_in_a_parser_is_a_recorded_reason_not_a_pool_restart() -> None:
    # an unknown kind makes get_parser raise ConfigError inside the worker: a stand-in
    # for a parser bug (any exception that is not a ParseError)
    pool = ParsePool(ParseConfig(workers=1))
    odd = ParseTask(kind="telegraph", body=b"<rss/>", url="http://127.0.0.1/f", headers={})
    try:
        asyncio.run(pool.parse(task(talks_feed(1))))
        before = pool.pids()
        with pytest.raises(ParseError) as failed:
            asyncio.run(pool.parse(odd))
        after = pool.pids()
    finally:
        pool.close()
    assert "the telegraph parser failed on this response (ConfigError" in str(failed.value)
    assert before == after, "a parser's exception must not cost the worker"


def test_a_worker_of_the_cli_has_its_whole_memory_limit_to_parse_with(
    tmp_path: Path, server: TestServer
) -> None:
    """The CLI's imports map ~190 MiB before any parse; the cap counts only what a parse adds.

    Regression: the cap was absolute, so a worker forked from the CLI (the daemon, `poll`,
    `check`) was at its cap before parsing anything and an ordinary 2 MB feed failed as
    "needed more than 192 MiB".
    """
    server.serve("/big.xml", talks_feed(1000, filler=2000))  # 2.1 MB
    config = tmp_path / "aggregator.toml"
    config.write_text('[parse]\nworkers = 1\nmemory_limit = "64MiB"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", "check", server.url("/big.xml"), "-c", str(config)],
        cwd=tmp_path,
        env={**env, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "read as feed: 1000 entries" in proc.stdout
