"""The endpoint hubs call, served inside the daemon (WebSub sections 5.3 and 7).

Every subscription has its own callback URL: ``[websub] callback`` plus an unguessable
token. The endpoint reads the token from the last segment of the path, so it works
whether or not the reverse proxy in front strips the public prefix.

* ``GET``: the hub's verification of intent (or a denial), answered by the
  ``Receiver`` from the database: the challenge is echoed only for a request we made.
* ``POST``: a delivery. Its body is read up to ``[fetch] max_bytes`` (more: 413)
  before the ``Receiver`` checks the signature and stores it.

It binds to loopback by default (``[websub] listen``) and sits behind the reverse
proxy that gives it its public URL. It has no other pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import NamedTuple, Protocol

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

log = structlog.get_logger("aggregator.websub")

#: Reads a delivery's body: ``None`` when it is longer than the given number of bytes.
Reader = Callable[[int], Awaitable[bytes | None]]
#: Seconds a stopping daemon gives requests in progress.
GRACE = 2.0
#: Connections served at once; more are answered 503 (each may hold a body of
#: ``[fetch] max_bytes`` in memory).
CONCURRENCY = 32


class Answer(NamedTuple):
    """An HTTP status and a short text body."""

    status: int
    text: str = ""


class Receiver(Protocol):
    """What the endpoint asks of the daemon (``aggregator.websub.receive``)."""

    async def verify(self, token: str, params: Mapping[str, str]) -> Answer:
        """Answer a verification of intent or a denial."""
        ...

    async def deliver(self, token: str, read: Reader, headers: Mapping[str, str]) -> Answer:
        """Check and store one delivery (``read(cap)``: its body, or None if over ``cap``
        bytes; headers in lower case)."""
        ...


def create_app(receiver: Receiver) -> Starlette:
    """The callback application."""

    async def endpoint(request: Request) -> Response:
        token = request.url.path.rstrip("/").rpartition("/")[2]
        if not token:
            return PlainTextResponse("no subscription here", status_code=404)
        if request.method == "GET":
            status, text = await receiver.verify(token, dict(request.query_params))
        else:
            status, text = await _delivery(receiver, token, request)
        return PlainTextResponse(text, status_code=status)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


async def _delivery(receiver: Receiver, token: str, request: Request) -> Answer:
    async def read(cap: int) -> bytes | None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                return None
        return bytes(body)

    headers = {k.lower(): v for k, v in request.headers.items()}
    return await receiver.deliver(token, read, headers)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon's handlers stop it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port).

    Raises:
        OSError: the address cannot be listened on (in use, not ours).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on accepted connections
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


class CallbackServer:
    """The callback application on a socket, in the daemon's event loop."""

    def __init__(self, receiver: Receiver, host: str, port: int) -> None:
        self.sock = bind(host, port)
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(receiver),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            limit_concurrency=CONCURRENCY,
            timeout_graceful_shutdown=int(GRACE),
        )
        self.server = _Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> CallbackServer:
        """Serve in the background; return once the socket accepts requests."""
        self.task = asyncio.get_running_loop().create_task(self.server.serve([self.sock]))
        while not self.server.started and not self.task.done():  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()  # raise what stopped it
        return self

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish (``GRACE`` s), close."""
        if self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.task, GRACE + 3)
        self.sock.close()
