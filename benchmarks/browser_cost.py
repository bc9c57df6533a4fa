"""What browser fetching and diff pictures cost, measured.

    python benchmarks/browser_cost.py pages  [--runs 20]
    python benchmarks/browser_cost.py images [--runs 20]
    python benchmarks/browser_cost.py daemon [--feeds 1000 --pages 20 --interval 30
        --page-interval 120 --browser-pages 1 --duration 150]

``pages``: one live blog whose 40 posts (and their JSON-LD) exist only after its script
fetched them ("light"), and the same with a 1 MB script bundle that builds 2,000 more
elements first ("heavy"), served by a page server in its own process. For each: the
median wall time and CPU of a browser fetch (our process, and Chromium's whole tree,
renderers that exited included), Chromium's peak PSS and tasks, and the first (cold)
fetch, which starts Chromium; against a plain GET + parse of the same URL (which finds
no posts) and of the same posts served as HTML.

``images``: a diff card drawn cold (Chromium started for it), warm (Chromium running,
each card new), and from the cache.

``daemon``: ``aggregator run`` with ``--feeds`` feeds (benchmarks/feedserver.py) on a
fixed ``--interval`` and ``--pages`` browser sources on ``--page-interval`` (rendered
``--browser-pages`` at a time, ``[browser] pages``), sampled from /proc
every 0.5 s for ``--duration`` seconds: the process tree's peak PSS and tasks (threads
included), Chromium's part of each, against the unit's MemoryMax and TasksMax; and
whether every source was fetched on schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import feedserver  # noqa: E402  benchmarks/ is the script's directory
from daemon_bomb import gaps, memory_kb, tree  # noqa: E402

MEMORY_MAX_MB, TASKS_MAX = 512, 64  # systemd/aggregator.service before this work
TICK = os.sysconf("SC_CLK_TCK")

# -- the page server ------------------------------------------------------------------

SHELL = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Live</title>
{bundle}</head><body><h1 id="h">Loading…</h1><main id="posts"></main><script>
fetch("data.json").then(r => r.json()).then(data => {{
  const s = document.createElement("script"); s.type = "application/ld+json";
  s.textContent = JSON.stringify(data.graph); document.head.appendChild(s);
  document.getElementById("h").textContent = data.headline;
  const main = document.getElementById("posts");
  for (const p of data.posts) {{ const a = document.createElement("article"); a.id = p.id;
    a.innerHTML = "<h2></h2><p></p>"; a.firstChild.textContent = p.headline;
    a.lastChild.textContent = p.text; main.appendChild(a); }}
}});</script></body></html>"""
BUNDLE = (
    "<script>/* a synthetic 1 MB bundle */ var junk = "
    + json.dumps("x" * 1_000_000)
    + ";\n(function () { const box = document.createElement('div');"
    " for (let i = 0; i < 2000; i++) { const d = document.createElement('div');"
    " d.textContent = 'widget ' + i + ' ' + junk.slice(i, i + 40); box.appendChild(d); }"
    " document.documentElement.appendChild(box); box.remove(); })();</script>"
)


def blog_data(i: int) -> dict[str, Any]:
    posts = [
        {"id": f"post-{n}", "headline": f"Update {n} from desk {i}",
         "text": feedserver.paragraph(i * 100 + n, 100), "at": f"2022-03-10T{n % 24:02d}:00:00Z"}
        for n in range(40)
    ]  # fmt: skip
    updates = [
        {"@type": "BlogPosting", "@id": f"https://news.example/live/{i}#{p['id']}",
         "headline": p["headline"], "articleBody": p["text"], "datePublished": p["at"]}
        for p in posts
    ]  # fmt: skip
    graph = {"@context": "https://schema.org", "@type": "LiveBlogPosting",
             "headline": f"Live: desk {i}", "liveBlogUpdate": updates}  # fmt: skip
    return {"headline": f"Live: desk {i}", "graph": graph, "posts": posts}


def static_page(i: int) -> str:
    """The same posts as HTML with their JSON-LD, as a publisher could have served them."""
    data = blog_data(i)
    posts = "".join(f'<article id="{p["id"]}"><h2>{p["headline"]}</h2><p>{p["text"]}</p></article>'
                    for p in data["posts"])  # fmt: skip
    return (f'<!DOCTYPE html><html><head><title>Live</title><script type="application/ld+json">'
            f"{json.dumps(data['graph'])}</script></head><body>{posts}</body></html>")  # fmt: skip


class Pages(BaseHTTPRequestHandler):
    """``/light/<i>/``, ``/heavy/<i>/`` (shells), their ``data.json``, ``/static/<i>/``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        kind, i = parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if len(parts) == 3 and parts[2] == "data.json":
            body, ctype = json.dumps(blog_data(i)).encode(), "application/json"
        elif kind in ("light", "heavy"):
            bundle = BUNDLE if kind == "heavy" else ""
            body, ctype = SHELL.format(bundle=bundle).encode(), "text/html; charset=utf-8"
        elif kind == "static":
            body, ctype = static_page(i).encode(), "text/html; charset=utf-8"
        else:
            body, ctype = b"not found", "text/plain"
        self.send_response(200 if ctype != "text/plain" else 404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_pages() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def start_pages() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "serve-pages"], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{proc.stdout.readline().strip()}"


# -- measuring ------------------------------------------------------------------------


def proc_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of ``pid`` (plus its reaped children's, when asked)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def chromium_cpu(browser_pid: int | None) -> float:
    """CPU of Chromium's tree: the browser with its reaped children, plus live children."""
    if not browser_pid:
        return 0.0
    members = tree(browser_pid)
    return proc_cpu(browser_pid, children=True) + sum(proc_cpu(p) for p in members[1:])


def tasks(pids: list[int]) -> int:
    count = 0
    for pid in pids:
        try:
            count += sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
    return count


class Sampler:
    """Peak PSS (MiB) and tasks of our Chromium processes, read every 50 ms by another
    process (``browser_cost.py sample PID``), so its own CPU is not counted as ours."""

    def __enter__(self) -> Sampler:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "sample", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate("", timeout=30)
        found = json.loads(out)
        self.peak_pss, self.peak_tasks = found["pss"], found["tasks"]


def sample(root: int) -> None:
    """Until stdin closes: the peak PSS (MiB) and tasks of Chromium under ``root``, as JSON."""
    peak = {"pss": 0.0, "tasks": 0.0}
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    while not done.wait(0.05):
        chrome = chromium_pids(tree(root))
        peak["pss"] = max(peak["pss"], sum(memory_kb(p)[1] for p in chrome) / 1024)
        peak["tasks"] = max(peak["tasks"], tasks(chrome))
    print(json.dumps(peak))


def med(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f}"


async def page_costs(base: str, runs: int) -> None:
    from aggregator.config import BrowserConfig, FetchConfig
    from aggregator.fetch import Fetcher
    from aggregator.fetch.browser import chromium_for, fetch_page
    from aggregator.parse import get_parser

    browser, fetch = BrowserConfig(), FetchConfig()
    parser = get_parser("liveblog")

    def entries(response: Any) -> int:
        try:
            return len(parser.parse(response.body, url=response.final_url,
                                    headers=response.headers, options=None).items)  # fmt: skip
        except Exception:  # the shell has no posts: a ParseError
            return 0

    print(f"per page, median of {runs} (ms; CPU = user + system):")
    print("  what                                 wall   our CPU  Chromium CPU  entries")
    async with Fetcher(fetch) as fetcher:
        for label, path in (("plain GET+parse of the shell", "/light/0/"),
                            ("plain GET+parse, posts as HTML", "/static/0/")):  # fmt: skip
            walls, cpus, found = [], [], 0
            for _ in range(runs):
                t, c = time.perf_counter(), time.process_time()
                found = entries(await fetcher.fetch(base + path))
                walls.append((time.perf_counter() - t) * 1000)
                cpus.append((time.process_time() - c) * 1000)
            print(f"  {label:34s} {med(walls)}  {med(cpus)}       {'-':>7s}  {found:7d}")
        chromium = chromium_for(fetcher, browser)
        for variant in ("light", "heavy"):
            await chromium.close()
            walls, cpus, ccpus, found = [], [], [], 0
            cold = (0.0, 0.0, 0.0)
            with Sampler() as sampler:
                for n in range(runs + 1):
                    url = f"{base}/{variant}/{n}/"
                    t, c, cc = time.perf_counter(), time.process_time(), chromium_cpu(chromium.pid)
                    response = await fetch_page(
                        fetcher, url, headers={}, wait_for="", browser=browser
                    )
                    wall = (time.perf_counter() - t) * 1000
                    cpu = (time.process_time() - c) * 1000
                    chrome = (chromium_cpu(chromium.pid) - cc) * 1000
                    found = entries(response)
                    if n == 0:
                        cold = (wall, cpu, chrome)
                    else:
                        walls.append(wall), cpus.append(cpu), ccpus.append(chrome)
            label = f"browser fetch, {variant} ({len(response.body) // 1024} KB HTML)"
            print(f"  {label:34s} {med(walls)}  {med(cpus)}     {med(ccpus)}  {found:7d}")
            print(f"    first fetch (starts Chromium): wall {cold[0]:.0f}, our CPU {cold[1]:.0f},"
                  f" Chromium CPU {cold[2]:.0f} (its start included)")  # fmt: skip
            print(f"    Chromium tree peak: PSS {sampler.peak_pss:.0f} MiB,"
                  f" tasks {sampler.peak_tasks:.0f} (threads included)")  # fmt: skip


async def image_costs(runs: int) -> None:
    from aggregator.config import BrowserConfig
    from aggregator.digest.card import Card
    from aggregator.digest.image import DiffImages, ImageSettings

    def card(n: int) -> Card:
        before = "\n\n".join(feedserver.paragraph(n * 10 + k, 60) for k in range(6))
        after = before.replace("the", "a", 3) + "\n\nA new closing paragraph."
        return Card("wire", f"https://news.example/{n}", f"Talks begin {n}", f"Talks end {n}",
                    before, after, n, n + 1, "2022-03-10 07:00:00.000",
                    "2022-03-10 09:00:00.000")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        settings = ImageSettings(Path(tmp), 10**9, 1200, 2000, BrowserConfig().settings())
        colds = []
        for n in range(max(3, runs // 4)):
            images = DiffImages(settings)
            t = time.perf_counter()
            await images.png(card(1000 + n))
            colds.append((time.perf_counter() - t) * 1000)
            await images.close()
        images = DiffImages(settings)
        await images.png(card(0))
        warm, hits, sizes = [], [], []
        with Sampler() as sampler:
            for n in range(1, runs + 1):
                t = time.perf_counter()
                png = await images.png(card(n))
                warm.append((time.perf_counter() - t) * 1000)
                sizes.append(len(png) / 1024)
                t = time.perf_counter()
                await images.png(card(n))
                hits.append((time.perf_counter() - t) * 1000)
        await images.close()
    print(f"diff card, 1200 px wide (ms, median): cold {med(colds)} ({len(colds)} runs, Chromium"
          f" started each time), warm {med(warm)}, from the cache {med(hits)} ({runs} runs);"
          f" PNG {statistics.median(sizes):.0f} KB")  # fmt: skip
    print(f"  Chromium tree peak while drawing: PSS {sampler.peak_pss:.0f} MiB,"
          f" tasks {sampler.peak_tasks:.0f}")  # fmt: skip


# -- the daemon ---------------------------------------------------------------------


def write_config(path: Path, db: Path, feeds: str, pages: str, args: argparse.Namespace) -> None:
    lines = [
        f'[storage]\ndatabase = "{db}"\n',
        '[fetch]\nconcurrency = 4\nper_host = 4\ntimeout = "60s"\n',
        f'[schedule]\nstartup_spread = "{args.interval}s"\n',
        f"[browser]\npages = {args.browser_pages}\n",
    ]
    lines += [
        f'[[sources]]\nname = "f{i}"\nurl = "{feeds}/feed/{i}.xml"\n'
        f'interval = "{args.interval}s"\nadaptive = false\n'
        for i in range(args.feeds)
    ]
    lines += [f'[[sources]]\nname = "b{i}"\nurl = "{pages}/light/{i}/"\nkind = "liveblog"\n'
              f'fetch = "browser"\ninterval = \"{args.page_interval}s\"\nadaptive = false\n'
              for i in range(args.pages)]  # fmt: skip
    path.write_text("\n".join(lines))


def chromium_pids(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if "chrom" in Path(os.readlink(f"/proc/{pid}/exe")).name:
                out.append(pid)
        except OSError:
            continue
    return out


def daemon_costs(args: argparse.Namespace) -> None:
    import sqlite3

    feeds, feeds_url = feedserver.start(args.feeds)
    pages, pages_url = start_pages()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config, db = Path(tmp) / "daemon.toml", Path(tmp) / "d.db"
            write_config(config, db, feeds_url, pages_url, args)
            daemon = subprocess.Popen(
                [sys.executable, "-m", "aggregator", "run", "--config", str(config),
                 "--log-level", "warning"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            peak = {"pss": 0.0, "tasks": 0.0, "chrome_pss": 0.0, "chrome_tasks": 0.0}
            started = time.monotonic()
            try:
                while time.monotonic() - started < args.duration:
                    pids = tree(daemon.pid)
                    chrome = chromium_pids(pids)
                    sizes = {p: memory_kb(p)[1] / 1024 for p in pids}
                    peak["pss"] = max(peak["pss"], sum(sizes.values()))
                    peak["tasks"] = max(peak["tasks"], tasks(pids))
                    peak["chrome_pss"] = max(peak["chrome_pss"], sum(sizes[p] for p in chrome))
                    peak["chrome_tasks"] = max(peak["chrome_tasks"], tasks(chrome))
                    time.sleep(0.5)
            finally:
                daemon.terminate()
                daemon.wait(60)
            rows = sqlite3.connect(db).execute(
                "SELECT s.name, f.started_at, f.outcome, f.error FROM fetches f"
                " JOIN sources s ON s.id = f.source_id ORDER BY f.id").fetchall()  # fmt: skip
    finally:
        feeds.terminate()
        pages.terminate()
    report_daemon(rows, peak, args)


def report_daemon(rows: list[tuple[str, str, str, str]], peak: dict[str, float],
                  args: argparse.Namespace) -> None:  # fmt: skip
    by: dict[str, list[tuple[str, str, str]]] = {}
    for name, at, outcome, error in rows:
        by.setdefault(name, []).append((at, outcome, error))
    browser = [n for n in by if n.startswith("b")]
    failed = [(n, e) for n in browser for _, o, e in by[n] if o == "error"]

    def worst(names: list[str]) -> float:
        return max((max(gaps([a for a, _, _ in by[n]]), default=0.0) for n in names), default=0)

    renders = sum(len(by[n]) for n in browser)
    expected = args.pages * args.duration / args.page_interval
    print(f"daemon, {args.feeds} feeds every {args.interval:g} s + {args.pages} browser sources"
          f" every {args.page_interval:g} s ([browser] pages = {args.browser_pages}),"
          f" {args.duration:g} s:")  # fmt: skip
    print(f"  sources fetched: {len(by)}/{args.feeds + args.pages}; browser sources"
          f" {len(browser)}/{args.pages}: {renders} renders (about {expected:.0f} due),"
          f" {len(failed)} failed")  # fmt: skip
    for name, error in failed[:5]:
        print(f"    {name}: {error}")
    feeds = [n for n in by if not n.startswith("b")]
    print(f"  largest gap between two fetches of one source: feeds {worst(feeds):.1f} s,"
          f" browser sources {worst(browser):.1f} s")  # fmt: skip
    print(f"  process tree peak PSS {peak['pss']:.0f} MiB (Chromium {peak['chrome_pss']:.0f}),"
          f" peak tasks {peak['tasks']:.0f} (Chromium {peak['chrome_tasks']:.0f})")  # fmt: skip
    memory = "within" if peak["pss"] < MEMORY_MAX_MB else "OVER"
    threads = "within" if peak["tasks"] <= TASKS_MAX else "OVER"
    print(f"  against MemoryMax={MEMORY_MAX_MB}M: {memory}; TasksMax={TASKS_MAX}: {threads}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["pages", "images", "daemon", "serve-pages", "sample"])
    parser.add_argument("pid", type=int, nargs="?", help="(sample) the process to watch")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--page-interval", type=float, default=120.0)
    parser.add_argument("--browser-pages", type=int, default=1)
    parser.add_argument("--duration", type=float, default=150.0)
    args = parser.parse_args()
    from aggregator import log

    log.configure(level="WARNING")
    if args.what == "serve-pages":
        serve_pages()
    elif args.what == "sample":
        sample(args.pid)
    elif args.what == "pages":
        server, base = start_pages()
        try:
            asyncio.run(page_costs(base, args.runs))
        finally:
            server.terminate()
    elif args.what == "images":
        asyncio.run(image_costs(args.runs))
    else:
        daemon_costs(args)


if __name__ == "__main__":
    main()
