"""Response headers, the optional token, and the Host check (pure ASGI middleware).

Every response carries a strict Content-Security-Policy (scripts and styles from this
app only, nothing inline, no plugins, no framing, no ``<base>``), ``nosniff``, a
``Referrer-Policy`` that sends no URL off the site, and ``Server-Timing: app;dur=MS``
(the time until its headers were sent: for a page, the whole render). With a token
configured, each request needs ``Authorization: Bearer TOKEN`` or the cookie set by one
visit to ``?token=TOKEN``. Without a token and without a proxy in front (the loopback
default), only a loopback ``Host`` is answered, so a web page elsewhere cannot read the
history by DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none';"
    " object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
COOKIE = "aggregator_token"


class Guard:
    """Wrap ``app``: security headers always; then the token or the loopback Host check."""

    def __init__(self, app: ASGIApp, *, token: str | None, check_host: bool) -> None:
        self.app = app
        self.token = token
        self.check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *HEADERS, (b"server-timing", took)]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.check_host and not is_loopback(_hostname(headers.get("host", ""))):
            await _plain(
                send_with_headers,
                421,
                "This server answers only to loopback addresses: open it as http://127.0.0.1:PORT/"
                " on this machine, or give it a token ([serve] token_env) or --behind-proxy to"
                " serve other host names.",
            )
            return
        if self.token is not None:
            verdict = self._authorize(scope, headers)
            if verdict == "redirect":
                await _redirect_setting_cookie(scope, send_with_headers, self.token)
                return
            if verdict == "no":
                await _plain(
                    send_with_headers,
                    401,
                    "A token is needed: send 'Authorization: Bearer TOKEN' or open ?token=TOKEN"
                    " once.",
                    [(b"www-authenticate", b'Bearer realm="aggregator"')],
                )
                return
        await self.app(scope, receive, send_with_headers)

    def _authorize(self, scope: Scope, headers: dict[str, str]) -> str:
        assert self.token is not None
        given = headers.get("authorization", "")
        if given.lower().startswith("bearer ") and _same(given[7:].strip(), self.token):
            return "yes"
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no credential
            cookie = SimpleCookie()
        if COOKIE in cookie and _same(cookie[COOKIE].value, self.token):
            return "yes"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "token" in query and _same(query["token"], self.token):
            return "redirect"
        return "no"


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``[::1]`` with or without brackets)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *(extra or [])]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect_setting_cookie(scope: Scope, send: Send, token: str) -> None:
    """Answer ``?token=`` with the cookie and a redirect to the same URL without it."""
    query = [
        (k, v)
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if k != "token"
    ]
    root, path = scope.get("root_path", ""), scope["path"]
    path = path if path.startswith(root) else root + path  # uvicorn puts root_path in path
    path = "/" + path.lstrip("/")  # never `//host/...`: a redirect stays on this site
    location = path + (("?" + urlencode(query)) if query else "")
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    cookie = f"{COOKIE}={token}; Path={root or '/'}; HttpOnly; SameSite=Strict{secure}"
    headers = [
        (b"location", location.encode()),
        (b"set-cookie", cookie.encode()),
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
