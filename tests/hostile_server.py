"""A misbehaving HTTP server on 127.0.0.1, written with ``asyncio.start_server``.

``tests/server.py`` speaks correct HTTP; this one does what hostile or broken
servers do: drips one byte at a time, never answers, streams a chunked body
forever, lies about ``Content-Length``, resets the connection mid-body, sends
decompression bombs and redirect loops. Each path is routed to a handler
coroutine that writes raw bytes to the socket; the module-level factories
below build the handlers the hostile suite uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import brotli


@dataclass
class RawRequest:
    """The request line and headers the server received."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]


class HostileServer:
    """Route paths to raw handlers; run the loop on a background thread."""

    __test__ = False

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[RawRequest] = []
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> HostileServer:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0), self.loop
        ).result(5)
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request = _parse_head(head)
            self.requests.append(request)
            handler = self.routes.get(request.path, respond(404, b"not found"))
            await handler(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.tasks.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                writer.close()


def _parse_head(head: bytes) -> RawRequest:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return RawRequest(method, path, headers)


def head_bytes(status: int, headers: dict[str, str]) -> bytes:
    """A status line and headers, ``Connection: close`` added."""
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def respond(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    """A well-formed response with a correct ``Content-Length``."""
    hdrs = {"Content-Type": "application/rss+xml", **(headers or {})}
    hdrs["Content-Length"] = str(len(body))

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes(status, hdrs) + body)
        await writer.drain()

    return handler


def etag_every_time(body: bytes) -> Handler:
    """The same bytes each time, under a new ``ETag`` each time (never a 304)."""
    counter = iter(range(1, 1_000_000))

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        await respond(200, body, {"ETag": f'"v{next(counter)}"'})(request, writer)

    return handler


def drip(body: bytes, every: float) -> Handler:
    """Announce the whole body, then send it one byte every ``every`` seconds."""

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes(200, {"Content-Length": str(len(body))}))
        for i in range(len(body)):
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)

    return handler


def silent() -> Handler:
    """Accept the connection, read the request, never answer."""

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    return handler


def chunked(chunks: Iterator[bytes], headers: dict[str, str] | None = None) -> Handler:
    """A chunked body made of ``chunks`` (possibly endless)."""
    hdrs = {"Content-Type": "application/rss+xml", "Transfer-Encoding": "chunked"}
    hdrs.update(headers or {})

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes(200, hdrs))
        for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return handler


def endless(chunk: bytes) -> Iterator[bytes]:
    """``chunk`` forever."""
    while True:
        yield chunk


def lying_length(declared: int, body: bytes) -> Handler:
    """Declare ``declared`` bytes, send ``body``, close."""

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes(200, {"Content-Length": str(declared)}) + body)
        await writer.drain()

    return handler


def reset_mid_body(body: bytes) -> Handler:
    """Send half of ``body``, then reset the connection (RST, not FIN)."""

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head_bytes(200, {"Content-Length": str(len(body))}))
        writer.write(body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return handler


def redirect(location: str, status: int = 302) -> Handler:
    """A redirect to ``location``."""
    return respond(status, b"", {"Location": location})


def gzip_bomb(size: int) -> Handler:
    """``size`` zero bytes, gzip-compressed (about 1,000:1)."""
    bomb = gzip.compress(b"\0" * size, compresslevel=9)
    return respond(200, bomb, {"Content-Encoding": "gzip"})


def brotli_bomb(size: int) -> Handler:
    """``size`` zero bytes, brotli-compressed (far more than 1,000:1)."""
    bomb = brotli.compress(b"\0" * size, quality=5)
    return respond(200, bomb, {"Content-Encoding": "br"})
