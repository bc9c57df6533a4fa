"""``Chromium``: one headless Chromium per process, started on first use, restarted on failure.

``tab()`` opens a fresh context for one fetch or one picture, at most
``pages`` at a time. While any tab is open a watchdog reads the PSS of the
whole Chromium tree twice a second; past ``memory_limit`` it kills the largest
renderer (its tab fails saying why), and if that does not bring the tree under
the limit it restarts Chromium. A tab that cannot be closed in time (a hung
browser), or Chromium exiting, also restarts it for the next tab, leaving every
other part of the process alone. After ``idle_close`` seconds with no tab open
Chromium is stopped; the next tab starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from aggregator.chromium.cdp import BrowserError, BrowserGone, Connection
from aggregator.chromium.process import (
    ChromiumSettings,
    ProcessUsage,
    Spawned,
    spawn,
    tree_usage,
)
from aggregator.chromium.tab import Tab

log = structlog.get_logger("aggregator.chromium")

START_TIMEOUT = 30.0  # seconds for Chromium to answer its first command
CLOSE_TIMEOUT = 5.0  # seconds to dispose a tab's context before Chromium counts as hung
PING_TIMEOUT = 5.0  # seconds for Chromium to answer a ping after a page could not be opened
WATCH_EVERY = 0.5  # seconds between two memory readings while tabs are open
MAX_MESSAGE = 64 * 2**20  # bytes: one CDP message (HTML is checked against its limit first)


class Refuser:
    """A loopback listener that closes every connection: the proxy for tabs with no network."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen (once) and return the ``socks5://`` URL."""
        if self.server is None:
            self.server = await asyncio.start_server(_refuse, "127.0.0.1", 0)
            port = self.server.sockets[0].getsockname()[1]
            self.url = f"socks5://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


async def _refuse(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


class Chromium:
    """One Chromium process tree, shared by every tab of this process (see module doc)."""

    def __init__(self, settings: ChromiumSettings) -> None:
        self.settings = settings
        self.starts = 0
        self._proc: Spawned | None = None
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.pages)
        self._tabs: dict[str, Tab] = {}
        self._refuser = Refuser()
        self._watcher: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closing: asyncio.Future[None] | None = None
        self._health: asyncio.Future[None] | None = None
        self._stopping = ""  # why Chromium is being stopped, for the tabs it takes down

    @property
    def pid(self) -> int | None:
        """The browser process's pid while it runs."""
        return self._proc.pid if self._proc and not self._proc.closed else None

    def usage(self) -> list[ProcessUsage]:
        """PSS and threads of every process of the tree now (empty when not running)."""
        return tree_usage(self.pid) if self.pid else []

    @contextlib.asynccontextmanager
    async def tab(
        self,
        *,
        proxy: str = "",
        javascript: bool = True,
        width: int = 1280,
        height: int = 900,
        time_limit: float | None = None,
    ) -> AsyncIterator[Tab]:
        """A page in a fresh context, closed afterwards; ``proxy`` "" means no network at all.

        At most ``pages`` tabs are open at once; ``time_limit`` (raising ``TimeoutError``)
        counts from when this tab got its turn, and covers the body of the ``with``.

        Raises:
            BrowserGone: Chromium could not be started or died.
        """
        async with self._slots, asyncio.timeout(time_limit):
            try:
                conn = await self._running()
                if self._idle is not None:
                    self._idle.cancel()
                route = proxy or await self._refuser.start()
                tab = await Tab.open(
                    conn, proxy=route, javascript=javascript, width=width, height=height
                )
            except (asyncio.CancelledError, BrowserGone):
                self._check_health()  # no page in time: is Chromium itself still answering?
                raise
            self._tabs[tab.context] = tab
            self._watch()
            try:
                yield tab
            finally:
                await self._close_tab(tab)

    async def _close_tab(self, tab: Tab) -> None:
        self._tabs.pop(tab.context, None)
        try:
            await tab.dispose(CLOSE_TIMEOUT)
        except BrowserGone as exc:
            if self._conn is not None and not self._conn.closed.is_set():  # hung, not gone
                await self.restart(f"a page could not be closed: {exc}")
        if not self._tabs:
            self._idle = asyncio.get_running_loop().call_later(
                self.settings.idle_close, self._idle_timeout
            )

    def _check_health(self) -> None:
        """In the background: restart Chromium if it no longer answers a ping in time."""
        if self._health is None or self._health.done():
            self._health = asyncio.ensure_future(self._ping())

    async def _ping(self) -> None:
        conn = self._conn
        if conn is None or conn.closed.is_set():
            return
        try:
            await conn.call("Browser.getVersion", within=PING_TIMEOUT)
        except BrowserGone as exc:
            if conn is self._conn:
                await self.restart(f"Chromium stopped answering: {exc}")

    def _idle_timeout(self) -> None:
        self._closing = asyncio.ensure_future(self._close_if_idle())

    async def _close_if_idle(self) -> None:
        if not self._tabs:
            await self.close()

    async def _running(self) -> Connection:
        async with self._lock:
            if self._conn is None or self._conn.closed.is_set():
                await self._stop(self._conn.reason if self._conn else "")
                await self._start()
            assert self._conn is not None
            return self._conn

    async def _start(self) -> None:
        refuser = await self._refuser.start()
        settings = self.settings
        if not settings.default_proxy:
            settings = ChromiumSettings(**{**_fields(settings), "default_proxy": refuser})
        profile = Path(tempfile.mkdtemp(prefix="aggregator-chromium-"))
        try:
            self._proc = spawn(settings, profile)
        except OSError as exc:
            raise BrowserGone(f"cannot start Chromium ({settings.executable}): {exc}") from None
        self._conn = Connection(max_message=MAX_MESSAGE)
        await self._conn.open(self._proc.commands, self._proc.answers)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._proc.pidfd, self._exited, self._proc, self._conn)
        try:
            version = await self._conn.call("Browser.getVersion", within=START_TIMEOUT)
            await self._conn.call("Target.setDiscoverTargets", {"discover": True})
        except BrowserError as exc:
            await self._stop(str(exc))
            raise BrowserGone(f"Chromium did not start ({settings.executable}): {exc}") from None
        self._conn.on("Target.targetCreated", self._target_created)
        self.starts += 1
        log.debug("chromium.started", pid=self._proc.pid, version=version.get("product"))

    def _exited(self, proc: Spawned, conn: Connection) -> None:
        asyncio.get_running_loop().remove_reader(proc.pidfd)
        proc.reap()
        self._closing = asyncio.ensure_future(conn.aclose("Chromium exited"))
        for tab in list(self._tabs.values()):
            tab.fail(self._stopping or "Chromium exited while the page was open")

    def _target_created(self, params: dict[str, Any]) -> None:
        info = params.get("targetInfo", {})
        tab = self._tabs.get(info.get("browserContextId", ""))
        if tab is None or info.get("targetId") == tab.target or info.get("type") != "page":
            return
        tab.window_opened()
        if self._conn is not None:
            task = asyncio.ensure_future(
                self._conn.call("Target.closeTarget", {"targetId": info["targetId"]})
            )
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_memory(), name="chromium-memory")

    async def _watch_memory(self) -> None:
        """Keep the tree under ``memory_limit`` while tabs are open (see module doc)."""
        over_before = False
        while self._tabs and self.pid:
            tree = await asyncio.to_thread(self.usage)
            total = sum(p.pss for p in tree)
            if total <= self.settings.memory_limit:
                over_before = False
                for tab in self._tabs.values():
                    tab.crash_note = ""
            else:
                note = (
                    f"Chromium used {total // 2**20} MiB, over [browser] memory_limit"
                    f" ({self.settings.memory_limit // 2**20} MiB): the page was stopped"
                )
                renderers = sorted((p for p in tree if p.renderer), key=lambda p: -p.pss)
                if renderers and not over_before:
                    self._kill_renderer(renderers[0].pid, note)
                    over_before = True
                else:
                    await self.restart(note)
                    return
            await asyncio.sleep(WATCH_EVERY)

    def _kill_renderer(self, pid: int, note: str) -> None:
        """SIGKILL one renderer; the tabs it served fail with ``note`` (their crash reason)."""
        log.warning("chromium.memory_limit", renderer=pid, reason=note)
        for tab in self._tabs.values():
            tab.crash_note = note
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    async def restart(self, reason: str) -> None:
        """Stop Chromium now (the next tab starts it again); open tabs fail with ``reason``."""
        log.warning("chromium.restart", reason=reason)
        for tab in list(self._tabs.values()):
            tab.fail(reason)
        async with self._lock:
            self._stopping = reason
            try:
                await self._stop(reason)
            finally:
                self._stopping = ""

    async def _stop(self, reason: str) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            await conn.aclose(reason or "Chromium was stopped")
        if proc is not None and not proc.closed:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(proc.pidfd)
            await asyncio.to_thread(proc.kill)

    async def close(self) -> None:
        """Stop Chromium and the watchdog (safe to call twice; a later tab starts it again)."""
        if self._idle is not None:
            self._idle.cancel()
        if self._health is not None and not self._health.done():
            self._health.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        async with self._lock:
            if self._proc is not None:
                log.debug("chromium.stopped", pid=self._proc.pid)
            await self._stop("")
        await self._refuser.close()


def _fields(settings: ChromiumSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__slots__}  # type: ignore[attr-defined]


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Chromium] = (
    weakref.WeakKeyDictionary()
)


def shared(settings: ChromiumSettings) -> Chromium:
    """This event loop's Chromium (fetching and pictures share one; the first settings win)."""
    loop = asyncio.get_running_loop()
    found = _SHARED.get(loop)
    if found is None:
        found = _SHARED[loop] = Chromium(settings)
    return found
