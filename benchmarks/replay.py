"""Replay several days of an evolving news corpus through the real pipeline; measure storage.

    python3 benchmarks/replay.py [--sources 200] [--days 7] [--polls-per-day 12]

A local HTTP server (127.0.0.1, in this process) serves ``--sources`` sources
that evolve between polls: RSS feeds with HTML summaries, some with full
``content:encoded`` articles, Atom feeds, and JSON-LD live blogs. Between two
polls new stories appear and old ones fall off the bottom, headlines are
rewritten, summaries and articles are edited, live-blog posts are appended and
corrected, and now and then a story is deleted. Unchanged sources answer 304.

Each poll round runs the real ``aggregator poll`` code path (``Pipeline`` with
the worker-process parsers, the store's writer thread, then the delivery worker
to a ``jsonl`` sink) into a real SQLite file. Time travels only in the data: a
round stands for ``24 / polls_per_day`` hours of the corpus, and after each
round the daemon's hourly retention runs with an explicit ``now``: the real
time of the round ``keep`` simulated days ago, plus ``keep``, so rows written
before that round are old enough to prune.

It prints the raw text (title + summary + content as received, summed over the
stored versions), the database bytes after a checkpoint (file + WAL, free
pages counted), their ratio, bytes per version, and each table's and index's
size from ``dbstat``. The corpus is generated, deterministic (``--seed``).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import itertools
import json
import math
import random
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator import config as config_mod  # noqa: E402
from aggregator import log  # noqa: E402
from aggregator.config import Config  # noqa: E402
from aggregator.fetch import Fetcher  # noqa: E402
from aggregator.notify.worker import DeliveryWorker  # noqa: E402
from aggregator.pipeline import Pipeline  # noqa: E402
from aggregator.sandbox import ParsePool  # noqa: E402
from aggregator.store.retention import prune  # noqa: E402
from aggregator.store.thread import StoreThread  # noqa: E402
from aggregator.timeutil import from_db, now_db  # noqa: E402

EPOCH = 1_760_000_000  # the corpus's simulated start (publication dates)
HOUR = 3600.0

# -- words ---------------------------------------------------------------------


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


COMMON = _split(
    "the of and to a in that is for on was with he it as at by said be from his have an are"
    " has but not they were this had who will their been after more its one about would"
    " people two up than year new out over into also last when first could her we there"
    " which she all other what some can them years our time government officials minister"
    " country police city week president state told report world percent three since before"
    " against under between while during where most around early because only just like"
    " health public election court security military economy talks deal vote market prices"
    " workers company million billion support leaders national local families children"
)
_ONSETS = _split("b bl br c ch cl cr d dr f fl fr g gl gr h j k l m n p pl pr r s sh sl st t")
_ONSETS += ("th", "tr", "v", "w")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "ie", "oo", "ou")
_CODAS = ("", "", "n", "r", "s", "t", "l", "m", "nd", "nt", "rd", "st", "ck", "ng")


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    """``size`` distinct pronounceable pseudo-words (a stand-in for a news vocabulary)."""
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.choices((1, 2, 3, 4), weights=(3, 6, 4, 1))[0]
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        words[word] = None
    return list(words)


class Writer:
    """Sentences drawn with Zipf-like word frequencies, so full-text search sees realistic terms."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        rare = _vocabulary(rng, 12_000)
        self.names = [w.capitalize() for w in _vocabulary(rng, 600)]
        self.words = [*COMMON, *rare]
        # rank r has weight 1/r: function words dominate, a long tail of rare ones
        self.weights = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(self.words))))

    def _words(self, rng: random.Random, n: int) -> list[str]:
        picked = rng.choices(self.words, cum_weights=self.weights, k=n)
        for i in range(n):
            if rng.random() < 0.07:
                picked[i] = rng.choice(self.names)
        return picked

    def sentence(self, rng: random.Random, low: int = 9, high: int = 26) -> str:
        words = self._words(rng, rng.randint(low, high))
        if len(words) > 8 and rng.random() < 0.4:
            words[rng.randint(3, len(words) - 3)] += ","
        text = " ".join(words)
        if rng.random() < 0.12:
            text = f"\u201c{text.capitalize()},\u201d {rng.choice(self.names)} said"
        return text[0].upper() + text[1:] + "."

    def title(self, rng: random.Random) -> str:
        words = self._words(rng, rng.randint(7, 13))
        return " ".join(words).capitalize()[:110]

    def paragraph(self, rng: random.Random, sentences: tuple[int, int] = (2, 4)) -> str:
        return " ".join(self.sentence(rng) for _ in range(rng.randint(*sentences)))


# -- the corpus ----------------------------------------------------------------

#: One in ten sources of each kind: RSS with HTML summaries, RSS with plain-text summaries,
#: RSS with an HTML excerpt and the full article (``content:encoded``), Atom with an HTML
#: summary, Atom with the full article only (no summary), JSON-LD live blogs.
KINDS = (
    "rss", "rss_plain", "rss_full", "rss", "atom", "rss_full", "atom_full", "rss_plain",
    "liveblog", "rss",
)  # fmt: skip


@dataclass
class Story:
    """One feed item or live-blog post, as the publisher has it now."""

    ident: str
    title: str
    lead: list[str]  # the summary's sentences
    body: list[str]  # the full article's paragraphs (empty: summary only)
    published: float
    image: str = ""
    plain: bool = False  # a plain-text summary (no markup)


@dataclass
class Source:
    """One publisher's feed or live blog and how busy it is."""

    index: int
    kind: str
    rate: float  # new stories per hour at peak
    window: int  # items listed
    stories: list[Story] = field(default_factory=list)  # newest first
    headline: str = ""  # live blogs
    live_from: float = 0.0  # hour of the day a live blog starts, runs 8 hours
    version: int = 0
    serial: int = 0

    @property
    def path(self) -> str:
        return f"/{self.kind}/{self.index}"


class Corpus:
    """Every source, evolved hour by hour; records what it did."""

    def __init__(self, sources: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.writer = Writer(seed)
        self.hours = 0.0
        self.sources = [self._source(i) for i in range(sources)]
        self.did: dict[str, int] = {}

    def _source(self, i: int) -> Source:
        kind = KINDS[i % len(KINDS)]
        rng = self.rng
        rate = rng.choice((0.15, 0.3, 0.5, 0.8, 1.2, 2.0))
        src = Source(i, kind, rate, rng.randint(15, 40), live_from=rng.uniform(6, 14))
        if kind == "liveblog":
            src.headline = self.writer.title(rng) + ": live updates"
            src.window = 30
        for n in range(src.window if kind != "liveblog" else 12):
            src.stories.append(self._story(src, EPOCH - n * 1800))
        return src

    def _story(self, src: Source, at: float) -> Story:
        rng, w = self.rng, self.writer
        src.serial += 1
        full = src.kind in ("rss_full", "atom_full")
        body = [w.paragraph(rng) for _ in range(rng.randint(4, 11))] if full else []
        lead = [w.sentence(rng) for _ in range(rng.randint(1, 3 if src.kind != "liveblog" else 5))]
        image = f"https://img.example/{src.index}/{src.serial}.jpg" if rng.random() < 0.4 else ""
        plain = src.kind == "rss_plain"
        ident = f"s{src.index}-{src.serial}"
        return Story(ident, w.title(rng), lead, body, at, "" if plain else image, plain)

    def advance(self, hours: float) -> None:
        """Move every source ``hours`` forward."""
        for src in self.sources:
            before = src.version
            if src.kind == "liveblog":
                self._live(src, hours)
            else:
                self._feed(src, hours)
            if src.version != before:
                self._count("sources changed")
        self.hours += hours

    def _count(self, what: str, n: int = 1) -> None:
        self.did[what] = self.did.get(what, 0) + n

    def _poisson(self, mean: float) -> int:
        # Knuth's method; means here are small
        limit, k, p = math.exp(-mean), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def _daytime(self) -> float:
        hour = self.hours % 24
        return 1.0 if 6 <= hour < 22 else 0.25

    def _feed(self, src: Source, hours: float) -> None:
        rng, now = self.rng, EPOCH + self.hours * HOUR
        changed = False
        for _ in range(self._poisson(src.rate * hours * self._daytime())):
            src.stories.insert(0, self._story(src, now + rng.uniform(0, hours * HOUR)))
            self._count("new stories")
            changed = True
        recent = src.stories[: min(6, len(src.stories))]
        if rng.random() < 0.04 * hours:
            story = rng.choice(recent)
            story.title = self.writer.title(rng)
            self._count("retitles")
            changed = True
        if rng.random() < 0.06 * hours:
            self._edit(rng.choice(recent))
            changed = True
        if rng.random() < 0.006 * hours and len(src.stories) > 8:
            del src.stories[rng.randint(2, len(src.stories) - 3)]
            self._count("deleted")
            changed = True
        del src.stories[src.window :]
        if changed:
            src.version += 1

    def _edit(self, story: Story) -> None:
        rng, w = self.rng, self.writer
        if story.body and rng.random() < 0.6:
            if rng.random() < 0.5:
                story.body.append(w.paragraph(rng))
                self._count("articles extended")
            else:
                i = rng.randrange(len(story.body))
                story.body[i] = w.paragraph(rng)
                self._count("articles rewritten")
        elif rng.random() < 0.5:
            story.lead.append(w.sentence(rng))
            self._count("summaries extended")
        else:
            i = rng.randrange(len(story.lead))
            words = story.lead[i].split()
            words[rng.randrange(len(words))] = rng.choice(w.names)
            story.lead[i] = " ".join(words)
            self._count("summaries corrected")

    def _live(self, src: Source, hours: float) -> None:
        rng, now = self.rng, EPOCH + self.hours * HOUR
        live = src.live_from <= self.hours % 24 < src.live_from + 8
        changed = False
        if live:
            for _ in range(self._poisson(3.0 * hours)):
                src.stories.insert(0, self._story(src, now + rng.uniform(0, hours * HOUR)))
                self._count("live posts")
                changed = True
            if rng.random() < 0.25 * hours and len(src.stories) > 1:
                self._edit(rng.choice(src.stories[:4]))
                changed = True
            if rng.random() < 0.05 * hours:
                src.headline = self.writer.title(rng) + ": live updates"
                self._count("retitles")
                changed = True
        del src.stories[src.window :]
        if changed:
            src.version += 1

    # -- rendering -------------------------------------------------------------

    def body(self, src: Source, base: str) -> tuple[bytes, str]:
        """The source's document now, and its content type."""
        if src.kind == "liveblog":
            return liveblog(src, base).encode(), "text/html; charset=utf-8"
        if src.kind.startswith("atom"):
            return atom(src, base).encode(), "application/atom+xml; charset=utf-8"
        return rss(src, base).encode(), "application/rss+xml; charset=utf-8"


def _summary_html(story: Story, base: str) -> str:
    if story.plain:
        return " ".join(story.lead)
    img = f'<img src="{story.image}" alt="" width="640" height="360"/>' if story.image else ""
    sentences = " ".join(html.escape(s) for s in story.lead)
    return f'{img}<p>{sentences} <a href="{base}/{story.ident}">Read more</a></p>'


def _article_html(story: Story) -> str:
    parts = []
    for i, para in enumerate(story.body):
        text = html.escape(para)
        if i == 1:
            text = text.replace(" ", " <strong>", 1).replace(".", ".</strong>", 1)
        parts.append(f"<p>{text}</p>")
        if i == 2 and story.image:
            parts.append(
                f'<figure><img src="{story.image}" alt=""/><figcaption>{html.escape(story.title)}'
                "</figcaption></figure>"
            )
    return "\n".join(parts)


def rss(src: Source, base: str) -> str:
    items = []
    for s in src.stories:
        content = (
            f"<content:encoded><![CDATA[{_article_html(s)}]]></content:encoded>" if s.body else ""
        )
        items.append(
            f"<item><title>{html.escape(s.title)}</title>"
            f"<link>{base}/{s.ident}?utm_source=rss</link>"
            f'<guid isPermaLink="false">{s.ident}</guid>'
            f"<pubDate>{formatdate(s.published, usegmt=True)}</pubDate>"
            f"<description>{html.escape(_summary_html(s, base))}</description>{content}</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
        f"<title>Source {src.index}</title><link>{base}</link><description>news</description>"
        + "".join(items)
        + "</channel></rss>"
    )


def atom(src: Source, base: str) -> str:
    entries = []
    for s in src.stories:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.published))
        content = (
            f'<content type="html">{html.escape(_article_html(s))}</content>' if s.body else ""
        )
        summary = (  # full-article Atom feeds often give no summary
            ""
            if s.body
            else f'<summary type="html">{html.escape(_summary_html(s, base))}</summary>'
        )
        entries.append(
            f"<entry><id>tag:example.test,2026:{s.ident}</id>"
            f'<title>{html.escape(s.title)}</title><link href="{base}/{s.ident}"/>'
            f"<published>{when}</published><updated>{when}</updated>"
            "<author><name>Staff</name></author>"
            f"{summary}{content}</entry>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Source {src.index}</title><id>tag:example.test,2026:{src.index}</id>"
        "<updated>2026-01-01T00:00:00Z</updated>" + "".join(entries) + "</feed>"
    )


def liveblog(src: Source, base: str) -> str:
    posts = [
        {
            "@type": "BlogPosting",
            "@id": f"{base}#{s.ident}",
            "url": f"{base}#{s.ident}",
            "headline": s.title,
            "articleBody": "\n".join(s.lead),
            "datePublished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.published)),
            "author": {"@type": "Person", "name": "Staff reporter"},
        }
        for s in src.stories
    ]
    blog = {
        "@context": "https://schema.org",
        "@type": "LiveBlogPosting",
        "@id": f"{base}#blog",
        "headline": src.headline,
        "description": "Follow the latest.",
        "liveBlogUpdate": posts,
    }
    visible = "".join(
        f'<article id="{s.ident}"><h2>{html.escape(s.title)}</h2><p>'
        f"{html.escape(' '.join(s.lead))}</p></article>"
        for s in src.stories
    )
    return (
        f"<!doctype html><html><head><title>{html.escape(src.headline)}</title>"
        f'<script type="application/ld+json">{json.dumps(blog)}</script></head>'
        f"<body><h1>{html.escape(src.headline)}</h1>{visible}</body></html>"
    )


# -- the server ----------------------------------------------------------------


class Served:
    """What each path answers now: body, content type and ETag (304 when it matches)."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[bytes, str, str]] = {}
        self.lock = threading.Lock()

    def publish(self, corpus: Corpus, base: str) -> None:
        docs = {}
        for src in corpus.sources:
            old = self.docs.get(src.path)
            etag = f'"{src.index}-{src.version}"'
            if old is not None and old[2] == etag:
                docs[src.path] = old
                continue
            body, ctype = corpus.body(src, base + src.path)
            docs[src.path] = (body, ctype, etag)
        with self.lock:
            self.docs = docs


def serve(served: Served) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with served.lock:
                doc = served.docs.get(self.path)
            if doc is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, ctype, etag = doc
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# -- the replay ----------------------------------------------------------------


def write_config(path: Path, db: Path, corpus: Corpus, base: str, extra: str) -> Config:
    lines = [
        f'[storage]\ndatabase = "{db}"\n{extra}',
        "[fetch]\nconcurrency = 16\nper_host = 16\n",
        f'[[sinks]]\nkind = "jsonl"\npath = "{path.parent / "events.jsonl"}"\n',
    ]
    for src in corpus.sources:
        kind = "liveblog" if src.kind == "liveblog" else "feed"
        lines.append(
            f'[[sources]]\nname = "s{src.index:04d}"\nkind = "{kind}"\nurl = "{base}{src.path}"\n'
        )
    path.write_text("\n".join(lines))
    return config_mod.load(path)


async def replay(
    config: Config, corpus: Corpus, served: Served, base: str, days: int, per_day: int
) -> dict[str, Any]:
    """Poll every source ``days * per_day`` times, evolving the corpus between polls."""
    store = StoreThread(config.storage.database, failing_after=config.notify.failing_after)
    parsers = ParsePool(config.parse)
    worker = DeliveryWorker(config, store)
    hours = 24 / per_day
    keep = config.storage.keep_events
    keep_rounds = math.ceil(keep / (hours * HOUR))
    started: list[str] = []
    pruned: dict[str, int] = {}
    changes = 0
    try:
        await worker.sync()
        async with Fetcher(config.fetch) as fetcher:
            pipeline = Pipeline(config, store, fetcher, parsers)
            await pipeline.sync()
            for n in range(days * per_day):
                if n:
                    corpus.advance(hours)
                served.publish(corpus, base)
                started.append(now_db())
                results = await pipeline.poll_all()
                changes += sum(sum(r.counts.values()) for r in results)
                failed = [r for r in results if not r.ok]
                if failed:
                    raise SystemExit(f"round {n}: {failed[0].source}: {failed[0].error}")
                await worker.run_once()
                await store.call(store.store.flush)
                if n >= keep_rounds:  # the housekeeping pass, with the simulated "now"
                    now = from_db(started[n - keep_rounds]) + timedelta(seconds=keep)
                    done = await store.call(prune, store.store.db, config.storage, now)
                    for what, count in done.items():
                        pruned[what] = pruned.get(what, 0) + count
                if (n + 1) % per_day == 0:
                    print(f"  day {(n + 1) // per_day}: {changes} changes so far", flush=True)
    finally:
        await worker.aclose()
        parsers.close()
        store.close()
    return {"changes": changes, "pruned": pruned}


# -- measuring -----------------------------------------------------------------

#: Title, summary and content as received; a summary identical to the content counts once
#: (feedparser copies the content of an item that has no summary into its summary).
RAW_TEXT = """
SELECT count(*),
       COALESCE(SUM(length(CAST(COALESCE(title, '') AS BLOB))
                  + CASE WHEN summary = content THEN 0
                         ELSE length(CAST(COALESCE(summary, '') AS BLOB)) END
                  + length(CAST(COALESCE(content, '') AS BLOB))), 0)
FROM versions
"""


def measure(db: Path) -> dict[str, Any]:
    """Raw text, file bytes after a checkpoint, and every table's and index's size."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        versions, raw = conn.execute(RAW_TEXT).fetchone()
        sizes = conn.execute(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
        kinds = dict(conn.execute("SELECT name, type FROM sqlite_master").fetchall())
        counts = {
            t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
            for t in ("entries", "versions", "changes", "fetches", "outbox", "deliveries",
                      "delivery_attempts")
        }  # fmt: skip
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    wal = db.with_name(db.name + "-wal")
    size = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return {
        "versions": versions,
        "raw": raw,
        "bytes": size,
        "free": free * page,
        "sizes": sizes,
        "kinds": kinds,
        "counts": counts,
    }


def report(m: dict[str, Any]) -> None:
    versions = max(1, m["versions"])
    print(f"\nversions stored            {m['versions']:>12,}")
    print(f"raw text (as received)     {m['raw']:>12,} bytes  ({m['raw'] / versions:,.0f}/version)")
    per = m["bytes"] / versions
    print(
        f"database (file + wal)      {m['bytes']:>12,} bytes  ({per:,.0f}/version)"
        f", of which {m['free']:,} free pages"
    )
    print(f"ratio database / raw text  {m['bytes'] / max(1, m['raw']):>12.2f}x")
    print("rows: " + ", ".join(f"{k} {v:,}" for k, v in m["counts"].items()))
    print(f"\n{'table or index':34}{'bytes':>12}{'share':>8}{'per version':>13}")
    for name, size in m["sizes"]:
        kind = m["kinds"].get(name, "index" if name.startswith("sqlite_autoindex") else "")
        label = f"{name} ({kind})" if kind == "index" else name
        print(f"{label:34}{size:>12,}{size / m['bytes']:>8.1%}{size / versions:>13,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--polls-per-day", type=int, default=12)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep-events", default=None, help='[storage] keep_events, e.g. "3d"')
    parser.add_argument("--db", type=Path, help="write the database here (default: a temp dir)")
    parser.add_argument("--measure", type=Path, help="only measure this existing database")
    args = parser.parse_args()
    log.configure(level="WARNING")
    if args.measure:
        report(measure(args.measure))
        return
    extra = f'keep_events = "{args.keep_events}"\n' if args.keep_events else ""
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        db = args.db or Path(tmp) / "replay.db"
        if db.exists():
            raise SystemExit(f"{db} exists; give a new path")
        corpus = Corpus(args.sources, args.seed)
        served = Served()
        server, base = serve(served)
        config = write_config(Path(tmp) / "replay.toml", db, corpus, base, extra)
        print(
            f"replaying {args.sources} sources x {args.days} days x {args.polls_per_day}"
            f" polls/day into {db}",
            flush=True,
        )
        began = time.monotonic()
        outcome = asyncio.run(replay(config, corpus, served, base, args.days, args.polls_per_day))
        server.shutdown()
        print(f"replayed in {time.monotonic() - began:.0f} s; the corpus did: {corpus.did}")
        print(f"pruned: {outcome['pruned'] or 'nothing'}")
        report(measure(db))


if __name__ == "__main__":
    main()
