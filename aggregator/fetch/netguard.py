"""Which addresses a fetch may reach.

Feed URLs come from users and from redirects chosen by servers, so every hop
is resolved and checked before we connect: link-local (cloud metadata such as
169.254.169.254, in any spelling), private, reserved and multicast addresses
are refused unless ``[fetch] allow_private = true``. Loopback is allowed only
when the configured source itself is on loopback (local feeds and tests).

Known limit: the check resolves the name, then httpx resolves it again to
connect; a DNS answer that changes in between (rebinding) is not caught. A page
rendered in Chromium does not have this gap: Chromium resolves no names, its
SOCKS5 guard (``aggregator.fetch.socks``) resolves each once, checks the answer
with ``check_addresses`` and connects to the address it checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aggregator.errors import BlockedAddress, FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal without a DNS lookup)."""
    try:
        literal = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    else:  # no thread hop through getaddrinfo for "127.0.0.1" and friends
        if isinstance(literal, ipaddress.IPv6Address) and literal.ipv4_mapped:
            return [literal.ipv4_mapped]
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
    out: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        out.append(address)
    return out


def classify(address: IPAddress) -> str:
    """``loopback``, ``private`` (incl. link-local and reserved) or ``public``."""
    if address.is_loopback:
        return "loopback"
    if (
        address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    ):
        return "private"
    return "public"


async def check_url(url: str, *, allow_loopback: bool, allow_private: bool) -> bool:
    """Refuse ``url`` unless every address it resolves to is allowed.

    Returns:
        True when the URL is on loopback (so redirects may stay on loopback).

    Raises:
        BlockedAddress: the URL or one of its addresses is not allowed.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedAddress(f"refusing to fetch {parts.scheme or 'scheme-less'} URL {url!r}")
    if not parts.hostname:
        raise BlockedAddress(f"URL has no host: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolve(parts.hostname, port)
    check_addresses(
        parts.hostname, addresses, allow_loopback=allow_loopback, allow_private=allow_private
    )
    return {classify(a) for a in addresses} == {"loopback"}


def check_addresses(
    host: str, addresses: list[IPAddress], *, allow_loopback: bool, allow_private: bool
) -> None:
    """Refuse ``host`` unless every one of its resolved ``addresses`` is allowed.

    Raises:
        BlockedAddress: one of the addresses is private, link-local or (when not
            allowed) loopback.
    """
    kinds = {classify(a) for a in addresses}
    if "private" in kinds and not allow_private:
        raise BlockedAddress(
            f"{host} resolves to a private or link-local address; refused"
            " (set [fetch] allow_private = true to allow)"
        )
    if "loopback" in kinds and not allow_loopback:
        raise BlockedAddress(
            f"{host} resolves to loopback, and the configured source is not local; refused"
        )
