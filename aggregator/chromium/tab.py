"""One page in its own fresh browser context: open, navigate, settle, read, screenshot.

A ``Tab`` is created by ``Chromium.tab`` and lives for one fetch or one picture.
Its context is new (no cookies, storage or cache from any other tab), denies
downloads, and sends every connection through ``proxy`` (a SOCKS5 listener of
ours; the default refuses everything). Dialogs are dismissed as they open;
windows the page opens are closed (and the tab fails past ``MAX_WINDOWS``).
A renderer crash, a kill by the memory watchdog or Chromium dying sets
``failure``, and every wait on the tab returns at once with that reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aggregator.chromium.cdp import BrowserError, BrowserGone, Connection

#: Windows a page may open (each closed at once) before its fetch fails.
MAX_WINDOWS = 5
#: How often a configured selector is looked for while waiting for it.
SELECTOR_POLL = 0.1


@dataclass(slots=True)
class Document:
    """The main document's response: final URL, status and headers (lower-case names)."""

    url: str = ""
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Tab:
    """A page in a fresh context (see the module docstring)."""

    def __init__(self, conn: Connection, context: str, target: str, session: str) -> None:
        self.conn, self.context, self.target, self.session = conn, context, target, session
        self.failure: str | None = None
        self.failed = asyncio.Event()
        #: Why the renderer is about to be killed (set by the memory watchdog), if it is.
        self.crash_note = ""
        self.windows = 0
        self.document = Document()
        self._loader = ""  # the navigation being waited for (a script may start another)
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._removers = [
            conn.on("Inspector.targetCrashed", self._crashed, session),
            conn.on("Page.javascriptDialogOpening", self._dialog, session),
            conn.on("Page.lifecycleEvent", self._lifecycle, session),
            conn.on("Network.responseReceived", self._response, session),
        ]

    @classmethod
    async def open(
        cls, conn: Connection, *, proxy: str, javascript: bool, width: int, height: int
    ) -> Tab:
        """A new context with one blank page, attached and instrumented."""
        made = await conn.call(
            "Target.createBrowserContext",
            {"disposeOnDetach": True, "proxyServer": proxy, "proxyBypassList": "<-loopback>"},
        )
        context = made["browserContextId"]
        try:
            await conn.call(
                "Browser.setDownloadBehavior", {"behavior": "deny", "browserContextId": context}
            )
            target = await conn.call(
                "Target.createTarget",
                {"url": "about:blank", "browserContextId": context, "width": width,
                 "height": height},
            )  # fmt: skip
            attached = await conn.call(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )
        except BrowserError:
            await _dispose(conn, context, 5.0)
            raise
        tab = cls(conn, context, target["targetId"], attached["sessionId"])
        for method, params in (
            ("Inspector.enable", {}),
            ("Page.enable", {}),
            ("Page.setLifecycleEventsEnabled", {"enabled": True}),
            ("Network.enable", {"maxTotalBufferSize": 0, "maxResourceBufferSize": 0}),
            ("Emulation.setScriptExecutionDisabled", {"value": not javascript}),
            ("Emulation.setDeviceMetricsOverride", _metrics(width, height)),
        ):
            await tab.call(method, params)
        return tab

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command to this page, abandoned at once if the tab fails meanwhile."""
        command = asyncio.ensure_future(self.conn.call(method, params, session=self.session))
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait({command, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if not command.done():
            command.cancel()
            raise BrowserError(self.failure or "the page failed")
        return command.result()

    def fail(self, reason: str) -> None:
        """Mark the tab failed (the first reason is kept); waits on it end."""
        if self.failure is None:
            self.failure = reason
        self.failed.set()

    def window_opened(self) -> None:
        """Count a window the page opened (closed by the browser); fail past the limit."""
        self.windows += 1
        if self.windows > MAX_WINDOWS:
            self.fail(f"the page opened more than {MAX_WINDOWS} windows")

    async def navigate(self, url: str) -> Document:
        """Load ``url``; the main document's response (or ``BrowserError`` for no response)."""
        self._idle.clear()
        self._loader = "pending"
        result = await self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"{result['errorText']} loading {url}")
        self._loader = result.get("loaderId", "")
        return self.document

    async def settle(self, selector: str = "") -> None:
        """Wait until the network is idle (no connection for 0.5 s) or ``selector`` matches.

        The caller bounds the wait; a failed tab ends it with ``BrowserError``.
        """
        if selector:
            check = f"document.querySelector({_js_string(selector)}) !== null"
            while not await self.evaluate(check):
                await self._sleep(SELECTOR_POLL)
            return
        idle = asyncio.ensure_future(self._idle.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait({idle, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            failed.cancel()
        if self.failure:
            raise BrowserError(self.failure)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (runs even with scripts disabled)."""
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluating in the page failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def set_content(self, html: str) -> None:
        """Replace the blank page's document with ``html`` (no network request is made)."""
        tree = await self.call("Page.getFrameTree")
        frame = tree["frameTree"]["frame"]["id"]
        await self.call("Page.setDocumentContent", {"frameId": frame, "html": html})

    async def screenshot(self, width: int, max_height: int) -> tuple[bytes, int]:
        """A PNG of the page, ``width`` wide and as tall as its content (at most ``max_height``).

        Returns the PNG and its height in pixels.
        """
        height = await self.evaluate(
            "Math.ceil(document.documentElement.getBoundingClientRect().height)"
        )
        height = max(1, min(int(height or 1), max_height))
        await self.call("Emulation.setDeviceMetricsOverride", _metrics(width, height))
        shot = await self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                "captureBeyondViewport": True,
            },
        )
        return base64.b64decode(shot["data"]), height

    async def kill_renderer(self) -> None:
        """End a renderer stuck in script (``Page.crash`` runs on its IO thread)."""
        with contextlib.suppress(BrowserError):
            async with asyncio.timeout(2):
                await self.conn.call("Page.crash", session=self.session, within=2)

    async def dispose(self, grace: float) -> None:
        """Close the context and everything in it.

        Raises:
            BrowserGone: Chromium did not answer within ``grace`` seconds (it is hung).
        """
        for remove in self._removers:
            remove()
        for task in self._tasks:
            task.cancel()
        self.conn.forget(self.session)
        await _dispose(self.conn, self.context, grace)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.failed.wait()
        if self.failure:
            raise BrowserError(self.failure)

    def _crashed(self, _params: dict[str, Any]) -> None:
        self.fail(self.crash_note or "the page crashed its renderer (out of memory, or killed)")

    def _dialog(self, _params: dict[str, Any]) -> None:
        task = asyncio.ensure_future(
            self.conn.call("Page.handleJavaScriptDialog", {"accept": False}, session=self.session)
        )
        self._tasks.add(task)
        task.add_done_callback(_quiet(self._tasks))

    def _lifecycle(self, params: dict[str, Any]) -> None:
        """Idle is the main frame's ``networkIdle`` for our navigation (or one a script began)."""
        if params.get("frameId") != self.target or self._loader in ("", "pending"):
            return
        if params.get("name") == "init" and params.get("loaderId") != self._loader:
            self._loader = params.get("loaderId", "")  # the page navigated itself
            self._idle.clear()
        elif params.get("name") == "networkIdle" and params.get("loaderId") == self._loader:
            self._idle.set()

    def _response(self, params: dict[str, Any]) -> None:
        """Keep the main frame's latest document response (the main frame's id is the target's)."""
        if params.get("type") != "Document" or params.get("frameId") != self.target:
            return
        response = params.get("response", {})
        headers = {str(k).lower(): str(v) for k, v in response.get("headers", {}).items()}
        self.document = Document(response.get("url", ""), response.get("status"), headers)


async def _dispose(conn: Connection, context: str, grace: float) -> None:
    """Dispose of ``context``; an error of Chromium's is ignored, silence is not.

    Raises:
        BrowserGone: no answer within ``grace`` seconds, or Chromium is gone.
    """
    try:
        await conn.call("Target.disposeBrowserContext", {"browserContextId": context}, within=grace)
    except BrowserGone:
        raise
    except BrowserError:
        pass  # already gone with its last page


def _metrics(width: int, height: int) -> dict[str, Any]:
    return {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}


def _js_string(text: str) -> str:
    """``text`` as a JavaScript string literal (JSON's escaping is valid JavaScript)."""
    import json

    return json.dumps(text)


def _quiet(tasks: set[asyncio.Task[Any]]) -> Any:
    """A done-callback that forgets the task and swallows its error (a dialog on a dead page)."""

    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()

    return done
