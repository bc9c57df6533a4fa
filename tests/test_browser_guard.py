"""The SOCKS5 guard a rendered page's connections go through, spoken to as Chromium does."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

from aggregator.fetch.netguard import IPAddress
from aggregator.fetch.socks import Guard
from tests.server import TestServer


async def connect(guard: Guard, host: str, port: int) -> tuple[int, bytes]:
    """A SOCKS5 CONNECT by name (as Chromium sends it); the reply code and what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(guard.url.rsplit(":", 1)[1]))
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = await reader.readexactly(10)
    body = b""
    if reply[1] == 0:
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = await reader.read()
    writer.close()
    return reply[1], body


def test_loopback_is_refused_unless_the_source_is_on_loopback(server: TestServer) -> None:
    """The same loopback server: refused to a public source's page, reached by a local one's."""
    server.serve("/hello", "hi", content_type="text/plain")

    async def run(allow_loopback: bool) -> tuple[int, bytes, list[str]]:
        async with Guard(allow_loopback=allow_loopback, allow_private=False, max_bytes=10**6) as g:
            code, body = await connect(g, "127.0.0.1", server.port)
            return code, body, g.refused

    code, body, refused = asyncio.run(run(False))
    assert code == 2 and body == b""
    assert refused == [
        f"127.0.0.1:{server.port} 127.0.0.1 resolves to loopback, and the configured source"
        " is not local; refused"
    ]
    assert server.hits("/hello") == []
    code, body, refused = asyncio.run(run(True))
    assert code == 0 and body.endswith(b"hi") and refused == []
    assert len(server.hits("/hello")) == 1


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_reached(
    server: TestServer,
) -> None:
    """DNS rebinding: a name that answers loopback, then a private address, is connected
    to at the loopback address it was checked with, after one lookup only."""
    server.serve("/hello", "rebind-proof", content_type="text/plain")
    answers = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.9.9.9")]
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [answers[len(asked) - 1]]

    async def run() -> tuple[int, bytes]:
        async with Guard(
            allow_loopback=True, allow_private=False, max_bytes=10**6, resolver=resolver
        ) as guard:
            return await connect(guard, "news.example", server.port)

    code, body = asyncio.run(run())
    assert code == 0 and body.endswith(b"rebind-proof")
    assert asked == ["news.example"]


def test_private_address_by_name_is_refused_without_connecting() -> None:
    """A name answering with a private address is refused; the reason names host and rule."""

    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("192.168.1.1")]

    async def run() -> tuple[int, list[str]]:
        async with Guard(
            allow_loopback=True, allow_private=False, max_bytes=10**6, resolver=resolver
        ) as guard:
            code, _ = await connect(guard, "router.example", 80)
            return code, guard.refused

    code, refused = asyncio.run(run())
    assert code == 2
    assert refused == [
        "router.example:80 router.example resolves to a private or link-local address;"
        " refused (set [fetch] allow_private = true to allow)"
    ]
