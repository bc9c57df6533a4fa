"""A real history and a real ``aggregator serve`` for the web tests.

The evolving story (``tests/story.py``), a live blog (``tests/liveblog_story.py``) and a
hostile feed are served by the local test server and polled with the real pipeline into
a database (an SQLite file, or PostgreSQL); ``aggregator serve`` then runs
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tests import liveblog_story, story
from tests.conftest import Harness
from tests.server import TestServer

ROOT = Path(__file__).parent.parent
STARTED = re.compile(r"read-only on (http://\S+/)")

HOSTILE_TITLE = "<script>alert('title')</script><img src=x onerror=alert('img')>"
HOSTILE_FEED = f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Hostile</title><link>https://evil.example/</link>
<description>x</description>
<item><title>{HOSTILE_TITLE.replace("<", "&amp;lt;")}</title>
<link>javascript:alert('link')</link><guid isPermaLink="false">evil-1</guid>
<description>&lt;p&gt;Body &lt;a href="javascript:alert('href')"&gt;click&lt;/a&gt;
&lt;svg onload=alert('svg')&gt;&lt;/svg&gt;
&lt;script&gt;alert('body')&lt;/script&gt;&lt;/p&gt;</description>
</item></channel></rss>
"""


class WebRig:
    """The polled history, and the server process reading it."""

    def __init__(self, tmp: Path, server: TestServer, database: Path | str | None = None) -> None:
        self.harness = Harness(tmp, server, database)
        self.server = server
        self.epoch = -1
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._err: IO[str] | None = None
        self.err_path = tmp / "serve.err"
        h = self.harness
        h.add("wire", "/feed.xml", interval="15m", tags=["world"])
        h.add("blog", "/live.html", kind="liveblog", interval="15m", removals="all")
        h.add("evil", "/evil.xml", interval="15m")
        h.add("dead", "/gone.xml", interval="15m")  # 404 at every poll: a failing source

    def advance(self, epoch: int) -> None:
        """Serve ``epoch`` of the story and the live blog, and poll every source once."""
        self.epoch = epoch
        self.server.serve("/feed.xml", story.rss(epoch))
        blog = min(epoch, len(liveblog_story.BLOG_EPOCHS) - 1)
        self.server.serve("/live.html", liveblog_story.blog_epoch(blog), content_type="text/html")
        self.server.serve("/evil.xml", HOSTILE_FEED)
        failed = [f"{r.source}: {r.error}" for r in self.harness.poll() if not r.ok]
        assert [f.split(":")[0] for f in failed] == ["dead"], failed

    def start(self, *args: str, env: dict[str, str] | None = None) -> WebRig:
        """Start ``aggregator serve`` on a free port; wait until it listens."""
        self.proc, self.url = start_serve(
            ["--config", str(self.harness.config_path), "--port", "0", *args],
            self.err_path,
            env=env,
        )
        return self

    def stop(self) -> None:
        """SIGTERM the server and wait for it."""
        if self.proc is not None:
            stop_serve(self.proc)

    def entry_id(self, source: str, key: str) -> int:
        rows = self.harness.rows(
            "SELECT e.id FROM entries e JOIN sources s ON s.id = e.source_id"
            " WHERE s.name = ? AND e.key = ?",
            (source, key),
        )
        return int(rows[0]["id"])


def serve_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a served subprocess: this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.update(extra or {})
    return env


def start_serve(
    args: list[str], err_path: Path, *, env: dict[str, str] | None = None, wait: float = 60
) -> tuple[subprocess.Popen[str], str]:
    """``python -m aggregator serve ARGS``; returns the process and the URL it printed."""
    err = err_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "serve", *args],
        cwd=ROOT,
        env=serve_env(env),
        stdout=subprocess.DEVNULL,
        stderr=err,
        text=True,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = STARTED.search(err_path.read_text())
        if found:
            return proc, found.group(1).rstrip("/")
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_serve(proc)
    raise AssertionError(f"aggregator serve did not start:\n{err_path.read_text()}")


def stop_serve(proc: subprocess.Popen[str]) -> int:
    """SIGTERM; the exit status (killed after 10 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextmanager
def served_story(
    workdir: Path, epochs: int = 3, database: Path | str | None = None
) -> Iterator[WebRig]:
    """The story polled through ``epochs`` states into a database (by default a file under
    ``workdir``), served."""
    server = TestServer().start()
    rig = WebRig(workdir, server, database)
    try:
        for epoch in range(epochs):
            rig.advance(epoch)
        yield rig.start()
    finally:
        rig.stop()
        server.stop()
