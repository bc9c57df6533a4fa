"""``aggregator demo``: watch a story evolve, offline, with no config.

A local server replays the demo story (``demo/story.py``); the real pipeline
polls it once per epoch into a fresh database, each change is printed as it is
detected, and the digest of the whole run is printed at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from aggregator import config as config_mod
from aggregator.config import Config
from aggregator.digest import build_digest, render
from aggregator.digest.model import describe, make_event
from aggregator.fetch import Fetcher
from aggregator.parse import PARSERS
from aggregator.pipeline import Pipeline
from aggregator.sandbox import ParsePool
from aggregator.store.queries import ChangeRow, Reader
from aggregator.store.thread import StoreThread
from aggregator.timeutil import now_db, to_db, utcnow

from .server import DemoServer
from .story import EPOCHS

__all__ = ["EPOCHS", "demo_config", "run_demo"]


def demo_config(server: DemoServer, database: Path) -> Config:
    """The demo's sources: the feed, and the live blog when that kind is available."""
    sources: list[dict[str, Any]] = [
        {"name": "geneva-feed", "url": server.url("/feed.xml"), "interval": "1m"}
    ]
    if "liveblog" in PARSERS:
        sources.append(
            {"name": "geneva-live", "kind": "liveblog", "url": server.url("/live.html"),
             "interval": "1m", "removals": "all"}
        )  # fmt: skip
    return config_mod.parse({"storage": {"database": str(database)}, "sources": sources}, "<demo>")


def change_line(row: ChangeRow) -> str:
    """One detected change as a line of the demo's running log."""
    title = row.new.title if row.new else row.old.title if row.old else row.current_title
    return f"  {row.kind:<9} [{row.source}] {title}  — {describe(make_event(row))}"


async def _run(
    database: Path, epochs: int, delay: float, say: Callable[[str], None]
) -> tuple[str, str]:
    with DemoServer() as server:
        config = demo_config(server, database)
        names = ", ".join(s.name for s in config.sources)
        say(f"Serving the demo story on {server.url('/')} ({names}); database {database}")
        started = now_db()
        store = StoreThread(database)
        parsers = ParsePool(config.parse)
        seen = 0
        try:
            async with Fetcher(config.fetch) as fetcher:
                pipeline = Pipeline(config, store, fetcher, parsers)
                await pipeline.sync()
                for epoch in range(epochs):
                    server.epoch = epoch
                    say(f"\nPoll {epoch + 1}/{epochs}:")
                    results = await pipeline.poll_all()
                    for result in results:
                        if not result.ok:
                            say(f"  {result.source} failed: {result.error}")
                    seen = _print_new_changes(database, seen, say)
                    if epoch < epochs - 1:
                        await asyncio.sleep(delay)
        finally:
            parsers.close()
            store.close()
    return started, to_db(utcnow() + timedelta(seconds=1))


def _print_new_changes(database: Path, after: int, say: Callable[[str], None]) -> int:
    reader = Reader.open(database)
    try:
        rows = reader.changes_after(after)
    finally:
        reader.close()
    if not rows:
        say("  (no changes)")
    for row in rows:
        say(change_line(row))
    return rows[-1].id if rows else after


def run_demo(
    database: Path, *, epochs: int = EPOCHS, delay: float = 1.0, color: bool = False,
    say: Callable[[str], None] = print, prog: str = "aggregator",
) -> None:  # fmt: skip
    """Poll the demo story ``epochs`` times into ``database``, then print the digest.

    The commands it suggests start with ``prog``, as the user started this one.
    """
    started, until = asyncio.run(_run(database, epochs, delay, say))
    reader = Reader.open(database)
    try:
        digest = build_digest(reader, started, until)
    finally:
        reader.close()
    say("\n" + "=" * 72 + "\nThe digest of this run (aggregator digest):\n")
    say(render(digest, "text", color=color))
    db = f" --db {database}"
    tries = [
        (f"history summit{db}", "every version of one story"),
        (f"diff summit --from 1{db}", "word diff between two versions"),
        (f"search prisoner exchange{db}", ""),
        (f"digest --format html -o digest.html{db}", ""),
        (f"sources{db}", ""),
        (f"serve{db}", "read it in a browser"),
    ]
    width = max(len(f"{prog} {command}") for command, why in tries if why)
    lines = [f"  {f'{prog} {command}':{width}}   # {why}".rstrip(" #") for command, why in tries]
    lines.append(f"  sqlite3 {database} 'SELECT * FROM headline_history'")
    say("Try next:\n" + "\n".join(lines))
