"""Benchmark `aggregator poll` against N local synthetic feeds, and the bare reference loops.

    python benchmarks/bench_poll.py                    # N = 1,000
    python benchmarks/bench_poll.py --feeds 10000      # N = 10,000 (a few minutes)
    python benchmarks/bench_poll.py --concurrency 1,4,16   # measure [fetch] concurrency

A feed server (benchmarks/feedserver.py) runs in its own process. Each pass
runs in a fresh child process so its CPU time and peak RSS are its own:

* reference-sync: a sequential ``httpx.Client`` + ``feedparser.parse`` (defaults)
  loop over every feed, then again sending the ETags it got (304s);
* reference-async-C: the same with ``httpx.AsyncClient``, C requests in flight;
* aggregator passes on a fresh database (``poll_once``, what `aggregator poll` runs):
  cold, unchanged with 304s, unchanged without validators (same bytes),
  changed (about half of the feeds changed; detection counts are checked
  against the server's own record of what it changed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def usage() -> dict[str, float]:
    """CPU seconds and peak RSS (MB) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": r.ru_utime + r.ru_stime, "rss_mb": r.ru_maxrss / 1024}


# -- child processes ---------------------------------------------------------


def child_reference(base: str, feeds: int, mode: str) -> dict[str, Any]:
    """Run the bare fetch+parse loop twice (cold, then conditional); report both."""
    import feedparser
    import httpx

    urls = [f"{base}/feed/{i}.xml" for i in range(feeds)]
    out: dict[str, Any] = {}
    etags: dict[str, str] = {}
    for phase in ("cold", "304"):
        before, started = usage(), time.perf_counter()
        if mode == "sync":
            with httpx.Client() as client:
                for url in urls:
                    hdrs = {"If-None-Match": etags[url]} if url in etags else {}
                    r = client.get(url, headers=hdrs)
                    if r.status_code == 200:
                        etags[url] = r.headers.get("etag", "")
                        feedparser.parse(r.content, response_headers=dict(r.headers))
        else:
            asyncio.run(_async_reference(urls, etags, int(mode)))
        after = usage()
        out[phase] = {
            "wall": time.perf_counter() - started,
            "cpu": after["cpu"] - before["cpu"],
            "rss_mb": after["rss_mb"],
        }
    return out


async def _async_reference(urls: list[str], etags: dict[str, str], inflight: int) -> None:
    import feedparser
    import httpx

    gate = asyncio.Semaphore(inflight)
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one(url: str) -> None:
            async with gate:
                hdrs = {"If-None-Match": etags[url]} if url in etags else {}
                r = await client.get(url, headers=hdrs)
            if r.status_code == 200:
                etags[url] = r.headers.get("etag", "")
                feedparser.parse(r.content, response_headers=dict(r.headers))

        await asyncio.gather(*(one(u) for u in urls))


def child_poll(config_path: str) -> dict[str, Any]:
    """One `aggregator poll` pass in this process."""
    from collections import Counter

    from aggregator import config as config_mod
    from aggregator.cli.common import register_plugins
    from aggregator.cli.poll import poll_once

    register_plugins()  # the sources' and sinks' own keys are checked at load, as the CLI does
    config = config_mod.load(config_path)
    before, started = usage(), time.perf_counter()
    results = asyncio.run(poll_once(config))
    wall = time.perf_counter() - started
    after = usage()
    counts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for r in results:
        counts.update(r.counts)
        outcomes[r.outcome] += 1
    return {
        "wall": wall,
        "cpu": after["cpu"] - before["cpu"],
        "rss_mb": after["rss_mb"],
        "counts": dict(counts),
        "outcomes": dict(outcomes),
    }


# -- the driver ----------------------------------------------------------------


def spawn(*args: str) -> dict[str, Any]:
    """Run this script as a child with ``args``; return the JSON it prints."""
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_config(path: Path, db: Path, base: str, feeds: int, concurrency: int) -> Path:
    lines = [
        f'[storage]\ndatabase = "{db}"\n',
        f'[fetch]\nconcurrency = {concurrency}\nper_host = {concurrency}\ntimeout = "60s"\n',
    ]
    lines += [f'[[sources]]\nname = "f{i}"\nurl = "{base}/feed/{i}.xml"\n' for i in range(feeds)]
    path.write_text("\n".join(lines))
    return path


def db_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20


def get(base: str, path: str) -> Any:
    with urlopen(base + path, timeout=30) as r:  # our own loopback server
        return json.loads(r.read() or b"null")


def run_aggregator(base: str, feeds: int, concurrency: int, tmp: Path) -> list[dict[str, Any]]:
    """cold, 304, no validators, changed; each checked against the server's record."""
    db = tmp / f"bench-{concurrency}.db"
    config = write_config(tmp / f"bench-{concurrency}.toml", db, base, feeds, concurrency)
    rows = []
    get(base, "/_conditional/on")
    plan = [
        ("cold", None, {"new": feeds * 30}),
        ("unchanged, 304", None, {}),
        ("unchanged, no validators", "/_conditional/off", {}),
        ("changed (~half)", "/_advance", None),
    ]
    for label, action, expected in plan:
        record = get(base, action) if action else None
        if label.startswith("changed"):
            get(base, "/_conditional/on")
            expected = {k: record[k] for k in ("new", "changed", "removed") if record[k]}
        result = spawn("--child-poll", str(config))
        ok = result["counts"] == expected and not result["outcomes"].get("error")
        check = "ok" if ok else f"MISMATCH want {expected}"
        name = f"aggregator c={concurrency}: {label}"
        rows.append({"pass": name, **result, "db_mb": db_mb(db), "check": check})
    return rows


def table(rows: list[dict[str, Any]], feeds: int) -> str:
    head = "| pass | wall s | CPU s | CPU ms/feed | peak RSS MB | req/s | DB MB | detection |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['pass']} | {r['wall']:.2f} | {r['cpu']:.2f} | {1000 * r['cpu'] / feeds:.2f}"
            f" | {r['rss_mb']:.0f} | {feeds / r['wall']:.0f} | {r.get('db_mb', 0):.1f}"
            f" | {r.get('check', '')} {r.get('outcomes', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark aggregator poll.")
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument(
        "--concurrency", default="4", help="[fetch] concurrency values, e.g. 1,4,16"
    )
    parser.add_argument(
        "--reference-async", default="1,10", help="in-flight values for the async reference"
    )
    parser.add_argument("--child-poll", help=argparse.SUPPRESS)
    parser.add_argument("--child-reference", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_poll:
        print(json.dumps(child_poll(args.child_poll)))
        return
    if args.child_reference:
        base, feeds, mode = args.child_reference
        print(json.dumps(child_reference(base, int(feeds), mode)))
        return
    feedserver = str(Path(__file__).with_name("feedserver.py"))
    server = subprocess.Popen(
        [sys.executable, feedserver, "--feeds", str(args.feeds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        rows: list[dict[str, Any]] = []
        for mode in ["sync", *args.reference_async.split(",")]:
            ref = spawn("--child-reference", base, str(args.feeds), mode)
            name = "reference sync" if mode == "sync" else f"reference async, {mode} in flight"
            rows += [{"pass": f"{name}: {phase}", **ref[phase]} for phase in ("cold", "304")]
        with tempfile.TemporaryDirectory() as tmp:
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                rows += run_aggregator(base, args.feeds, concurrency, Path(tmp))
                print(f"done: concurrency {concurrency}", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(10)
    print(f"N = {args.feeds} feeds x 30 items, {__import__('os').cpu_count()} CPUs\n")
    print(table(rows, args.feeds))


if __name__ == "__main__":
    main()
