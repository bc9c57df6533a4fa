"""The SOCKS5 guard: every connection a rendered page makes passes our address checks.

Each browser fetch gets its own guard on a loopback port, and its browser
context sends every connection there (Chromium is started with no DNS of its
own and loopback proxied too, see ``aggregator.chromium.process``). For each
``CONNECT host:port`` the guard resolves ``host`` once, checks every address
with ``netguard.check_addresses`` (private and link-local refused unless
``[fetch] allow_private``; loopback only when the source itself is on loopback),
then connects to the first address it checked: a DNS answer that changes
between check and connect (rebinding) cannot redirect the page. Refusals are
kept in ``refused`` for the fetch's record.

The guard also bounds the page: at most ``max_bytes`` received from the network
in all (past it every connection is cut and ``over_limit`` says why), and at
most ``max_connections`` connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable

from aggregator.errors import BlockedAddress, FetchError
from aggregator.fetch.netguard import IPAddress, check_addresses, resolve

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_REPLY_OK, _REFUSED_RULES, _BAD_COMMAND = 0, 2, 7
_CHUNK = 65536


class Guard:
    """One fetch's SOCKS5 listener (use ``async with``; ``url`` is for the browser)."""

    def __init__(
        self,
        *,
        allow_loopback: bool,
        allow_private: bool,
        max_bytes: int,
        connect_timeout: float = 10.0,
        max_connections: int = 256,
        resolver: Resolver = resolve,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.allow_private = allow_private
        self.max_bytes = max_bytes
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.resolver = resolver
        self.refused: list[str] = []
        self.received = 0
        self.connections = 0
        self.over_limit = ""
        self.url = ""
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Guard:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"socks5://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def refusal(self, host: str) -> str | None:
        """The recorded reason ``host`` was refused, if it was."""
        for reason in self.refused:
            if reason.startswith(f"{host} ") or reason.startswith(f"{host}:"):
                return reason
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._pipes.add(writer)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # closing the guard: end quietly (asyncio's server logs a cancelled handler)
        finally:
            self._pipes.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5 or 0 not in methods:
            writer.write(b"\x05\xff")  # no acceptable method: we speak only "no auth"
            return
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        host = await _address(reader, kind)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != 1:  # only CONNECT: no BIND, no UDP ASSOCIATE
            writer.write(_reply(_BAD_COMMAND))
            return
        self.connections += 1
        if self.connections > self.max_connections or self.over_limit:
            self._note(f"{host}:{port} not connected: more than {self.max_connections} connections")
            writer.write(_reply(_REFUSED_RULES))
            return
        upstream = await self._connect(host, port)
        if upstream is None:
            writer.write(_reply(_REFUSED_RULES))
            return
        up_reader, up_writer = upstream
        writer.write(_reply(_REPLY_OK))
        self._pipes.add(up_writer)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, count_in=False),
                self._pipe(up_reader, writer, count_in=True),
            )
        finally:
            self._pipes.discard(up_writer)
            up_writer.close()

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Resolve once, check, connect to the checked address; None (noted) if refused."""
        try:
            addresses = await self.resolver(host, port)
            check_addresses(
                host,
                addresses,
                allow_loopback=self.allow_loopback,
                allow_private=self.allow_private,
            )
        except BlockedAddress as exc:
            self._note(f"{host}:{port} {exc}")
            return None
        except FetchError as exc:  # cannot resolve: not a refusal of ours, just a failure
            self._note(f"{host}:{port} not connected: {exc}")
            return None
        target = str(addresses[0])
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.open_connection(target, port, family=_family(addresses[0]))
        except (OSError, TimeoutError) as exc:
            self._note(f"{host}:{port} not connected: {exc or type(exc).__name__}")
            return None

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, count_in: bool
    ) -> None:
        try:
            while chunk := await source.read(_CHUNK):
                if count_in:
                    self.received += len(chunk)
                    if self.received > self.max_bytes:
                        self.over_limit = (
                            f"response too large: the page loaded more than {self.max_bytes}"
                            " bytes ([fetch] max_bytes)"
                        )
                        self._cut_all()
                        return
                sink.write(chunk)
                await sink.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if sink.can_write_eof():
                    sink.write_eof()

    def _cut_all(self) -> None:
        for pipe in list(self._pipes):
            pipe.close()

    def _note(self, reason: str) -> None:
        if reason not in self.refused and len(self.refused) < 50:
            self.refused.append(reason)


async def _address(reader: asyncio.StreamReader, kind: int) -> str:
    if kind == 1:
        return socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
    if kind == 4:
        return socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
    if kind == 3:
        (length,) = await reader.readexactly(1)
        return (await reader.readexactly(length)).decode("idna").strip("[]")
    raise ValueError(f"unknown SOCKS address type {kind}")


def _family(address: IPAddress) -> int:
    return socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET


def _reply(code: int) -> bytes:
    return bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
