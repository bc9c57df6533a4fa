"""The Chrome DevTools Protocol over Chromium's debugging pipe: JSON messages ended by NUL.

``Connection.call`` sends a command and waits for its answer (within a deadline);
events go to the handlers registered with ``on``, by method name, for the whole
browser or for one session (one attached page). A message longer than
``max_message`` bytes (a hostile page's HTML past the size limit, say) ends the
connection rather than growing without bound; so does the pipe closing (Chromium
died). Every waiting call then fails with ``BrowserGone``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aggregator.errors import AggregatorError

Handler = Callable[[dict[str, Any]], None]


class BrowserError(AggregatorError):
    """Chromium refused a command or a page failed in it."""


class BrowserGone(BrowserError):
    """Chromium exited, crashed, stopped answering or was stopped."""


class Connection:
    """One pipe to one Chromium process."""

    def __init__(self, *, max_message: int) -> None:
        self.max_message = max_message
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: defaultdict[tuple[str, str], list[Handler]] = defaultdict(list)
        self._writer: asyncio.WriteTransport | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.reason = ""

    async def open(self, commands_fd: int, answers_fd: int) -> None:
        """Attach to our ends of the pipe (the fds are owned by the connection from here)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.max_message)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader),
            os.fdopen(answers_fd, "rb", buffering=0),
        )
        self._writer, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(commands_fd, "wb", buffering=0)
        )
        self._reader_task = asyncio.create_task(self._read(reader), name="chromium-cdp")

    def on(self, method: str, handler: Handler, session: str = "") -> Callable[[], None]:
        """Call ``handler(params)`` on each ``method`` event (of ``session``, "" = browser).

        Returns a function that removes the handler.
        """
        key = (session, method)
        self._handlers[key].append(handler)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._handlers[key].remove(handler)

        return remove

    def forget(self, session: str) -> None:
        """Drop every handler of ``session`` (detached or gone)."""
        for key in [k for k in self._handlers if k[0] == session]:
            del self._handlers[key]

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str = "",
        within: float = 30.0,
    ) -> dict[str, Any]:
        """Send a command and return its result.

        Raises:
            BrowserError: Chromium answered with an error.
            BrowserGone: the connection is closed, or no answer ``within`` seconds.
        """
        if self.closed.is_set() or self._writer is None:
            raise BrowserGone(self.reason or "Chromium is not running")
        self._next += 1
        ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            self._writer.write(json.dumps(message).encode() + b"\0")
            async with asyncio.timeout(within):
                return await future
        except TimeoutError:
            raise BrowserGone(f"Chromium did not answer {method} within {within:g}s") from None
        finally:
            self._waiting.pop(ident, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason = "Chromium closed the debugging pipe (it exited or crashed)"
        try:
            while True:
                raw = await reader.readuntil(b"\0")
                self._dispatch(json.loads(raw[:-1]))
        except asyncio.IncompleteReadError:
            pass
        except asyncio.LimitOverrunError:
            reason = f"a message from Chromium passed {self.max_message} bytes"
        except (ValueError, OSError) as exc:
            reason = f"unreadable message from Chromium: {exc}"
        self._close(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        ident = message.get("id")
        if ident is not None:
            future = self._waiting.get(ident)
            if future is None or future.done():
                return
            if "error" in message:
                error = message["error"]
                future.set_exception(BrowserError(str(error.get("message", error))))
            else:
                future.set_result(message.get("result", {}))
            return
        key = (message.get("sessionId", ""), message.get("method", ""))
        for handler in list(self._handlers.get(key, ())):
            handler(message.get("params", {}))

    def _close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.reason = reason
        self.closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrowserGone(reason))
        if self._writer is not None:
            self._writer.close()

    async def aclose(self, reason: str = "Chromium was stopped") -> None:
        """Close the pipe (Chromium exits when it sees it close) and stop reading."""
        self._close(reason)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
