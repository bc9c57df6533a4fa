"""Group commit: writes queued while the store's thread is busy share one transaction."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from aggregator.store import Store
from aggregator.store.thread import StoreThread
from tests.conftest import query_rows


def add_source(store: Store, name: str, fail: bool = False) -> int:
    """Insert a source row (a write a poll would make); raise afterwards if ``fail``."""
    cur = store.db.conn.execute(
        "INSERT INTO sources (name, kind, url, config_url, interval_seconds, added_at)"
        " VALUES (?, 'feed', ?, ?, 900, '2026-11-29 08:00:00.000')",
        (name, f"http://127.0.0.1/{name}.xml", f"http://127.0.0.1/{name}.xml"),
    )
    if fail:
        raise ValueError(f"{name} failed after writing")
    return int(cur.lastrowid or 0)


def busy(_store: Store, seconds: float) -> None:
    time.sleep(seconds)


def test_writes_queued_meanwhile_commit_together_and_a_failing_one_alone_rolls_back(
    tmp_path: Path,
) -> None:
    db = tmp_path / "group.db"
    thread = StoreThread(db)
    commits: list[str] = []
    thread.run(
        lambda: thread.store.db.conn.set_trace_callback(
            lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None
        )
    )

    async def many() -> list[Any]:
        blocker = asyncio.ensure_future(thread.call(busy, thread.store, 0.3))
        await asyncio.sleep(0.05)  # the thread is busy: the writes below queue
        writes = [thread.write(add_source, thread.store, f"s{i}", i == 7) for i in range(20)]
        results = await asyncio.gather(*writes, return_exceptions=True)
        await blocker
        return results

    try:
        results = asyncio.run(many())
    finally:
        thread.close()
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(failed) == 1 and "s7 failed after writing" in str(failed[0])
    names = {r["name"] for r in query_rows(db, "SELECT name FROM sources")}
    assert names == {f"s{i}" for i in range(20)} - {"s7"}
    assert len(commits) == 1, f"20 writes queued together made {len(commits)} commits"


def test_a_lone_write_is_committed_at_once(tmp_path: Path) -> None:
    db = tmp_path / "lone.db"
    thread = StoreThread(db)
    try:
        source_id = asyncio.run(thread.write(add_source, thread.store, "alone"))
        assert query_rows(db, "SELECT id FROM sources WHERE name = 'alone'") == [{"id": source_id}]
    finally:
        thread.close()


@pytest.mark.parametrize("n", [200])
def test_more_writes_than_one_group_holds_all_land(tmp_path: Path, n: int) -> None:
    db = tmp_path / "many.db"
    thread = StoreThread(db)

    async def many() -> list[int]:
        return list(await asyncio.gather(*(thread.write(add_source, thread.store, f"m{i}")
                                           for i in range(n))))  # fmt: skip

    try:
        ids = asyncio.run(many())
    finally:
        thread.close()
    assert len(set(ids)) == n
    assert query_rows(db, "SELECT count(*) AS n FROM sources") == [{"n": n}]
