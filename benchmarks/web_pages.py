"""Time every page and endpoint of ``aggregator serve`` on a (large) database.

    python3 benchmarks/web_pages.py DB [--requests 30] [--warmup 3]      # DB: a file or a URL

Starts ``aggregator serve --db DB`` as a subprocess on a free port (the real server:
uvicorn, the thread pool, one read-only connection per worker thread), picks real ids
and names from DB (the busiest source, the story with the most versions, a live blog's
page, a deep keyset page), then requests each URL ``--requests`` times, one at a time,
and prints p50/p95 of the server time (the ``Server-Timing`` header: request in to
headers out, which for a page is the whole render) and of the client's round trip.
Build a 1,000,000-version DB with ``benchmarks/bigdb.py`` first.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.store.db import connect  # noqa: E402
from tests.webrig import start_serve, stop_serve  # noqa: E402

TIMING = re.compile(r"app;dur=([\d.]+)")


def pick(db: str) -> dict[str, str]:
    """Real ids and names to request, read straight from the database."""
    conn = connect(db, readonly=True)
    one = lambda sql: conn.execute(sql).fetchone()  # noqa: E731
    busiest_source = one(
        "SELECT s.name, s.id FROM sources s ORDER BY (SELECT count(*) FROM entries e"
        " WHERE e.source_id = s.id) DESC LIMIT 1"
    )
    longest = one("SELECT id, version_count FROM entries ORDER BY version_count DESC LIMIT 1")
    blog = one(
        "SELECT e.id FROM entries e JOIN sources s ON s.id = e.source_id"
        " WHERE s.kind = 'liveblog' AND e.key = 'page' ORDER BY e.version_count DESC LIMIT 1"
    )
    typical = one("SELECT id FROM entries WHERE version_count BETWEEN 3 AND 10 LIMIT 1")
    max_change = one("SELECT max(id) FROM changes")[0] or 0
    tagged = one("SELECT count(*) FROM versions")[0]
    conn.close()
    return {
        "source": busiest_source[0],
        "story": str(longest[0]),
        "story_versions": str(longest[1]),
        "blog": str(blog[0]) if blog else str(longest[0]),
        "typical": str(typical[0]) if typical else str(longest[0]),
        "middle": str(max_change // 2),
        "versions": str(tagged),
    }


def urls(p: dict[str, str]) -> list[tuple[str, str]]:
    """(label, path) of every page and endpoint."""
    src = quote(p["source"], safe="")
    return [
        ("changes (home)", "/"),
        ("changes ?source=", f"/?source={src}"),
        ("changes ?kind=restored", "/?kind=restored"),
        ("changes ?since=1h", "/?since=1h"),
        ("changes ?before= (deep page)", f"/?before={p['middle']}"),
        (f"story ({p['story_versions']} versions)", f"/story/{p['story']}"),
        ("story (typical)", f"/story/{p['typical']}"),
        ("story (live blog page)", f"/story/{p['blog']}"),
        ("version permalink", f"/story/{p['story']}/v/2"),
        ("sources", "/sources"),
        ("source's stories", f"/sources/{quote(p['source'], safe='/')}"),
        ("search rare word", "/search?q=quillobrant"),
        ("search phrase words", "/search?" + urlencode({"q": "harbour bridge closure"})),
        ("search common word", "/search?q=government"),
        ("atom", "/changes.atom"),
        ("atom ?source=", f"/changes.atom?source={src}"),
        ("atom ?story=", f"/changes.atom?story={p['story']}"),
        ("api changes", "/api/changes"),
        ("api sources", "/api/sources"),
        ("api stories ?source=", f"/api/stories?source={src}"),
        ("api story", f"/api/stories/{p['story']}"),
        ("api version", f"/api/stories/{p['story']}/versions/1"),
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", help="an SQLite file or a postgresql:// URL")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    chosen = pick(args.db)
    err = Path(tempfile.mkdtemp(prefix="web-bench-")) / "serve.err"
    proc, base = start_serve(["--db", str(args.db), "--port", "0", "--log-level", "WARNING"], err)
    print(f"{args.db}: {int(chosen['versions']):,} versions; {args.requests} requests per URL")
    print(f"{'page / endpoint':34} {'status':>6} {'p50 ms':>8} {'p95 ms':>8} {'rt p50':>8}")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            for label, path in urls(chosen):
                server, total, status = [], [], 0
                for i in range(args.warmup + args.requests):
                    started = time.perf_counter()
                    response = client.get(path)
                    took = (time.perf_counter() - started) * 1000
                    status = response.status_code
                    match = TIMING.search(response.headers.get("server-timing", ""))
                    if i >= args.warmup and match:
                        server.append(float(match.group(1)))
                        total.append(took)
                print(
                    f"{label:34} {status:>6} {statistics.median(server):8.1f}"
                    f" {pct(server, 0.95):8.1f} {statistics.median(total):8.1f}"
                )
    finally:
        stop_serve(proc)
    if proc.returncode not in (0, None):
        print(err.read_text()[-2000:], file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except subprocess.SubprocessError as exc:
        sys.exit(str(exc))
