"""A fast local server of N synthetic feeds of M items that evolve by epoch.

Run as its own process (so its CPU is not counted as ours)::

    python benchmarks/feedserver.py --feeds 1000 [--no-conditional]

It prints its port on the first line of stdout. ``GET /feed/<i>.xml`` serves
feed ``i``; ``GET /_advance`` moves to the next epoch, changing about half of
the feeds, and answers with JSON: the epoch and the number of changes it made
of each kind (its own record, to check detection against). In a changed feed
one item is added (new), one retitled and one edited (changed), and one from
the middle dropped while older items stay listed (removed).

With ``--record``, every request's time, status and the feed's version are kept, with the
items of each version served with a body: ``GET /_record`` returns them (for checking
that nothing served was lost, and that no feed was fetched twice too soon).

With conditional GET on, each feed has an ETag and Last-Modified that change
only when the feed does, and ``If-None-Match`` is answered 304.
``GET /_conditional/off`` (``/on``) turns
validators off (on) while running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from email.utils import formatdate

WORDS = (
    "minister",
    "talks",
    "ceasefire",
    "corridor",
    "city",
    "aid",
    "port",
    "officials",
    "said",
    "on",
    "thursday",
    "that",
    "the",
    "meeting",
    "would",
    "continue",
    "after",
    "negotiators",
    "failed",
    "to",
    "agree",
    "on",
    "a",
    "timetable",
    "for",
)


def paragraph(seed: int, words: int = 160) -> str:
    """About 1 KB of deterministic text."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


class Feed:
    """One feed's items (newest first) and when it last changed."""

    def __init__(self, index: int, items: int) -> None:
        self.index = index
        self.next_id = items
        self.items = [self._item(n, 0) for n in range(items - 1, -1, -1)]
        self.version = 0
        #: (time, status, version, user agent) of every request, when recording (``--record``).
        self.hits: list[tuple[float, int, int, str]] = []
        #: Each version's items as served: [[guid, title, edit], ...].
        self.versions: dict[int, list[list[object]]] = {}

    def _item(self, n: int, edit: int) -> dict[str, object]:
        return {"id": n, "title": f"Story {n} of feed {self.index}", "edit": edit}

    def evolve(self, epoch: int) -> dict[str, int]:
        """Add one item, retitle one, edit one, drop one from the middle."""
        self.items.insert(0, self._item(self.next_id, 0))
        self.next_id += 1
        self.items[3]["title"] = f"{self.items[3]['title']} (updated {epoch})"
        self.items[5]["edit"] = int(self.items[5]["edit"]) + 1  # type: ignore[call-overload]
        del self.items[10]
        self.version = epoch
        return {"new": 1, "changed": 2, "removed": 1}

    def body(self) -> bytes:
        items = "".join(
            f'<item><guid isPermaLink="false">f{self.index}-{it["id"]}</guid>'
            f"<title>{it['title']}</title><link>http://example.test/{self.index}/{it['id']}</link>"
            f"<pubDate>{formatdate(1_600_000_000 + int(it['id']) * 60, usegmt=True)}</pubDate>"  # type: ignore[call-overload]
            f"<description>&lt;p&gt;{paragraph(int(it['id']) * 7 + int(it['edit']))}"  # type: ignore[call-overload]
            f"&lt;/p&gt;</description></item>"
            for it in self.items
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Feed {self.index}</title><link>http://example.test/{self.index}</link>"
            f"<description>synthetic</description>{items}</channel></rss>"
        ).encode()


def entity_bomb(entity_kb: int = 100, references: int = 100_000) -> bytes:
    """A ~400 KB RSS feed declaring one 100 KB entity and referencing it 100,000 times.

    Expanded, its one description is 10 GB: the "quadratic blowup" that drove
    feedparser's loose parser to 3.8 GB before entity declarations were refused.
    """
    value = "ceasefire " * (entity_kb * 102)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<!DOCTYPE rss [<!ENTITY a "{value}">]><rss version="2.0"><channel><title>b</title>'
        f"<item><guid>bomb</guid><title>Talks</title><description>{'&a;' * references}"
        "</description></item></channel></rss>"
    ).encode()


def start(feeds: int, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Run this server as a child process; return it and its base URL (for the benchmarks)."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--feeds", str(feeds), *extra], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    return server, f"http://127.0.0.1:{server.stdout.readline().strip()}"


class FeedServer:
    """The feeds plus the HTTP handling."""

    def __init__(self, feeds: int, items: int, conditional: bool, recording: bool = False) -> None:
        self.feeds = [Feed(i, items) for i in range(feeds)]
        self.conditional = conditional
        self.recording = recording
        self.epoch = 0
        self.requests = 0

    def advance(self) -> dict[str, object]:
        self.epoch += 1
        rng = random.Random(self.epoch)
        counts = {"new": 0, "changed": 0, "removed": 0, "feeds": 0}
        for feed in self.feeds:
            if rng.random() < 0.5:
                counts["feeds"] += 1
                for kind, n in feed.evolve(self.epoch).items():
                    counts[kind] += n
        return {"epoch": self.epoch, **counts}

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if path == "/_advance":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.advance()).encode()
        if path.startswith("/_conditional/"):
            self.conditional = path.endswith("/on")
            return 200, {}, b"true"
        if path == "/_requests":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.requests).encode()
        if path == "/_record":  # what was served: each feed's hits and served versions
            return 200, {"Content-Type": "application/json"}, json.dumps(self.record()).encode()
        if path == "/bomb.xml":  # hostile: never 304, so every poll must read it again
            return 200, {"Content-Type": "application/rss+xml"}, entity_bomb()
        self.requests += 1
        try:
            feed = self.feeds[int(path.removeprefix("/feed/").removesuffix(".xml"))]
        except (ValueError, IndexError):
            return 404, {}, b"no such feed"
        out = {"Content-Type": "application/rss+xml; charset=utf-8"}
        if self.conditional:
            etag = f'"{feed.index}-{feed.version}"'
            out["ETag"] = etag
            out["Last-Modified"] = formatdate(1_700_000_000 + feed.version * 3600, usegmt=True)
            if headers.get("if-none-match") == etag:
                self._note(feed, 304, headers)
                return 304, out, b""
        self._note(feed, 200, headers)
        return 200, out, feed.body()

    def _note(self, feed: Feed, status: int, headers: dict[str, str]) -> None:
        if not self.recording:
            return
        feed.hits.append((time.time(), status, feed.version, headers.get("user-agent", "")))
        if status == 200 and feed.version not in feed.versions:
            feed.versions[feed.version] = [
                [f"f{feed.index}-{it['id']}", it["title"], it["edit"]] for it in feed.items
            ]

    def record(self) -> dict[str, object]:
        """Every feed's hits and the versions it served with a body."""
        return {
            str(feed.index): {"hits": feed.hits, "versions": feed.versions} for feed in self.feeds
        }

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                status, out, body = self.answer(path, headers)
                out["Content-Length"] = str(len(body))
                head_out = f"HTTP/1.1 {status} X\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in out.items()
                )
                writer.write(head_out.encode() + b"\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--no-conditional", action="store_true")
    parser.add_argument("--record", action="store_true", help="keep every hit (GET /_record)")
    args = parser.parse_args()
    feeds = FeedServer(args.feeds, args.items, not args.no_conditional, args.record)
    server = await asyncio.start_server(feeds.connection, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
