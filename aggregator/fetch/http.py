"""Fetch one URL politely and safely.

* conditional GET (``If-None-Match`` / ``If-Modified-Since``);
* a total deadline per fetch (httpx's timeouts are per phase only);
* a body cap enforced while streaming *and after decompression*: we
  advertise gzip, deflate and br and decode ``aiter_raw()`` ourselves with a
  bounded output, since httpx decodes each chunk without limit;
* redirects followed by hand, at most ``max_redirects``, each hop checked by
  ``netguard``; a chain of only permanent redirects (301/308) reports the new URL;
* a global and a per-host concurrency cap; a response's (or error's) times
  start when it takes its slot, and the wait for the slot is reported apart;
* a body shorter than its ``Content-Length``, and an empty 2xx body, are
  failures, never a document to parse.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import brotli
import httpx

from aggregator import __version__
from aggregator.config import FetchConfig
from aggregator.errors import FetchError
from aggregator.fetch.netguard import check_url
from aggregator.timeutil import now_db, utcnow

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9,"
    " text/xml;q=0.9, application/json;q=0.8, text/html;q=0.7, */*;q=0.5"
)
REDIRECTS = (301, 302, 303, 307, 308)
PERMANENT = (301, 308)
NO_BODY = (204, 304)  # statuses whose Content-Length, if any, describes no bytes sent


@dataclass(slots=True)
class Response:
    """A successful (2xx or 304) response, body already read and decoded.

    ``Fetcher.fetch`` sets the times: ``started_at`` (database time text) is when
    the request took its concurrency slot, ``elapsed_ms`` its own time from then to
    the body's end, ``queued_ms`` the wait for the slot before it.
    """

    url: str
    final_url: str
    status: int
    headers: dict[str, str]
    body: bytes = b""
    moved_to: str | None = None
    elapsed_ms: int = 0
    redirects: list[str] = field(default_factory=list)
    started_at: str | None = None
    queued_ms: int = 0
    #: What went wrong without failing the fetch (a rendered page's refused requests).
    notes: list[str] = field(default_factory=list)

    @property
    def etag(self) -> str | None:
        """The validator to send back as ``If-None-Match``."""
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        """The validator to send back as ``If-Modified-Since``."""
        return self.headers.get("last-modified")

    @property
    def freshness(self) -> float | None:
        """Seconds the publisher declared fresh: ``Cache-Control: max-age``, else ``Expires``."""
        for part in self.headers.get("cache-control", "").split(","):
            name, _, value = part.strip().partition("=")
            if name.lower() == "max-age" and value.strip().isdigit():
                return float(value)
        expires = http_date(self.headers.get("expires"))
        if expires is None:
            return None
        date = http_date(self.headers.get("date")) or utcnow()
        return max(0.0, (expires - date).total_seconds())


def http_date(value: str | None) -> datetime | None:
    """An aware datetime from an HTTP-date header value, or None."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    moment = http_date(value)
    return None if moment is None else max(0.0, (moment - utcnow()).total_seconds())


class Fetcher:
    """An httpx client plus the politeness and safety rules. Use as an async context."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(
                max_connections=config.concurrency * 2, max_keepalive_connections=config.concurrency
            ),
            headers={
                "User-Agent": config.user_agent.format(version=__version__),
                "Accept": ACCEPT,
                "Accept-Encoding": "gzip, deflate, br",
            },
            trust_env=False,
        )
        self._global = asyncio.Semaphore(config.concurrency)
        self._hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(config.per_host)
        )
        #: Closed with the fetcher: other ways of fetching attached to it (the browser).
        self.attached: list[Callable[[], Awaitable[None]]] = []

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool, and what is attached (Chromium, if it was started)."""
        for close in self.attached:
            await close()
        self.attached.clear()
        await self.client.aclose()

    def host_slot(self, host: str) -> asyncio.Semaphore:
        """The per-host concurrency slot of ``host`` (a rendered page takes one too)."""
        return self._hosts[host]

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """GET ``url`` within the caps; raise ``FetchError`` with a readable reason.

        ``headers`` (a source's token or cookie) go with every request to ``url``'s
        host, never to another host a redirect leads to, nor from https to http.
        """
        host = urlsplit(url).hostname or ""
        conditional = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified
        asked = time.monotonic()
        async with self._global, self._hosts[host]:
            clock = _Clock(asked)
            try:
                response = await self._within_deadline(url, conditional, dict(headers or {}))
            except FetchError as exc:
                clock.stamp(exc)
                raise
        clock.stamp(response)
        return response

    async def post_form(
        self, url: str, form: Mapping[str, str], *, origin: str, answer_bytes: int = 4096
    ) -> tuple[int, str]:
        """POST ``form`` to ``url`` (a WebSub hub) under the same rules as a fetch.

        The total deadline, the concurrency caps and ``netguard`` apply; loopback is
        allowed only when ``origin`` (the source the request is for) is on loopback.
        Redirects are not followed (a form must not be re-sent elsewhere).

        Returns:
            The status and the start of the answer's text (``answer_bytes`` at most).

        Raises:
            FetchError: the address is refused, or the request failed or timed out.
        """
        local = await check_url(origin, allow_loopback=True, allow_private=True)
        host = urlsplit(url).hostname or ""
        async with self._global, self._hosts[host]:
            try:
                async with asyncio.timeout(self.config.timeout):
                    await check_url(
                        url, allow_loopback=local, allow_private=self.config.allow_private
                    )
                    request = self.client.build_request("POST", url, data=dict(form))
                    response = await self.client.send(request, stream=True)
                    try:
                        encoding = response.headers.get("content-encoding", "identity")
                        body = await read_capped(
                            response.aiter_raw(), encoding.lower().strip(), answer_bytes
                        )
                    except FetchError:  # a long answer: its start says enough
                        body = b""
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise FetchError(
                    f"timed out: no complete response within {self.config.timeout:g}s"
                ) from None
            except httpx.HTTPError as exc:
                raise FetchError(describe_httpx_error(exc)) from None
        return response.status_code, body.decode("utf-8", "replace").strip()

    async def _within_deadline(
        self, url: str, headers: dict[str, str], own: dict[str, str]
    ) -> Response:
        try:
            async with asyncio.timeout(self.config.timeout):
                return await self._follow(url, headers, own)
        except TimeoutError:
            raise FetchError(
                f"timed out: no complete response within {self.config.timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise FetchError(describe_httpx_error(exc)) from None

    async def _follow(self, url: str, headers: dict[str, str], own: dict[str, str]) -> Response:
        allow_loopback: bool | None = None
        chain: list[str] = []
        permanent = True
        current = url
        for _hop in range(self.config.max_redirects + 1):
            on_loopback = await check_url(
                current,
                allow_loopback=allow_loopback is not False,
                allow_private=self.config.allow_private,
            )
            if allow_loopback is None:
                allow_loopback = on_loopback
            sent = {**own, **headers} if own and _trusted_hop(url, current) else headers
            request = self.client.build_request("GET", current, headers=sent)
            response = await self.client.send(request, stream=True)
            try:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    permanent = permanent and response.status_code in PERMANENT
                    chain.append(current)
                    current = urljoin(current, response.headers["location"])
                    continue
                return await self._finish(url, current, response, chain, permanent)
            finally:
                await response.aclose()
        raise FetchError(
            f"too many redirects (more than {self.config.max_redirects}): {' -> '.join(chain[:6])}"
        )

    async def _finish(
        self, url: str, final: str, response: httpx.Response, chain: list[str], permanent: bool
    ) -> Response:
        status = response.status_code
        if not (200 <= status < 300 or status == 304):
            raise status_error(response)
        body = await self._read(response)  # read even a 304's empty body: keeps the connection
        if status == 304:
            body = b""
        elif not body:
            raise FetchError(f"empty response body (HTTP {status} with no content)", status=status)
        return Response(
            url=url,
            final_url=final,
            status=status,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=body,
            moved_to=final if chain and permanent else None,
            redirects=chain,
        )

    async def _read(self, response: httpx.Response) -> bytes:
        cap = self.config.max_bytes
        # a 304 may declare the length of the representation it does not send
        declared = None if response.status_code in NO_BODY else content_length(response.headers)
        if declared is not None and declared > cap:
            raise FetchError(f"response too large: Content-Length {declared} > limit {cap} bytes")
        encoding = response.headers.get("content-encoding", "identity").lower().strip()
        return await read_capped(
            response.aiter_raw(), encoding, cap, declared=declared, status=response.status_code
        )


def _trusted_hop(url: str, hop: str) -> bool:
    """Whether a source's own headers may go to ``hop``: same host, never https -> http."""
    first, then = urlsplit(url), urlsplit(hop)
    return first.hostname == then.hostname and (first.scheme, then.scheme) != ("https", "http")


def content_length(headers: httpx.Headers) -> int | None:
    """The declared ``Content-Length`` (encoded bytes), or None if absent or malformed."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def cut_short(received: int, declared: int | None, status: int | None) -> FetchError:
    """The failure for a body that ended before its declared (or chunked) end.

    It carries the status: a response did arrive, so this is the publisher's
    failure, not a sign that our network is down.
    """
    if declared is not None:
        reason = (
            f"body cut short: received {received} of the {declared} bytes its Content-Length"
            " declares (the server closed the connection early)"
        )
    else:
        reason = (
            f"body cut short: the server closed the connection after {received} bytes,"
            " before the end of its chunked body"
        )
    return FetchError(reason, status=status)


async def read_capped(
    chunks: AsyncIterator[bytes],
    encoding: str,
    cap: int,
    *,
    declared: int | None = None,
    status: int | None = None,
) -> bytes:
    """Read and decode a body, failing as soon as the decoded size passes ``cap``.

    ``declared`` is the ``Content-Length``: it counts the raw (still encoded) bytes,
    so those are counted here, and fewer than declared is a failure (carrying
    ``status``), as is a connection closed before a chunked body's end.
    """
    decoder = _Decoder(encoding)
    out = bytearray()
    received = 0
    try:
        async for raw in chunks:
            received += len(raw)
            out += decoder.feed(raw, cap + 1 - len(out))
            if len(out) > cap:
                raise FetchError(f"response too large: more than {cap} bytes after decompression")
    except httpx.RemoteProtocolError as exc:
        if "peer closed connection" not in str(exc):  # h11's words for an early close
            raise
        raise cut_short(received, declared, status) from None
    if declared is not None and received < declared:
        raise cut_short(received, declared, status)
    out += decoder.flush(cap + 1 - len(out))
    if len(out) > cap:
        raise FetchError(f"response too large: more than {cap} bytes after decompression")
    return bytes(out)


class _Decoder:
    """Incremental gzip/deflate/brotli decoding with a bound on each call's output."""

    def __init__(self, encoding: str) -> None:
        self.kind = {"": "identity", "x-gzip": "gzip"}.get(encoding, encoding)
        if self.kind == "gzip":
            self.z = zlib.decompressobj(31)
        elif self.kind == "deflate":
            self.z = zlib.decompressobj()
        elif self.kind == "br":
            self.br = brotli.Decompressor()
        elif self.kind != "identity":
            raise FetchError(f"unsupported Content-Encoding {encoding!r}")
        self.first = True

    def feed(self, raw: bytes, room: int) -> bytes:
        try:
            return self._feed(raw, max(room, 1))
        except (zlib.error, brotli.error) as exc:
            raise FetchError(f"corrupt {self.kind} body: {exc}") from None

    def _feed(self, raw: bytes, room: int) -> bytes:
        if self.kind == "identity":
            return raw
        if self.kind == "br":
            out = self.br.process(raw, output_buffer_limit=room)
            while len(out) < room and not self.br.can_accept_more_data():
                out += self.br.process(b"", output_buffer_limit=room - len(out))
            return out
        if self.kind == "deflate" and self.first:  # some servers send raw deflate
            self.first = False
            try:
                return self.z.decompress(raw, room)
            except zlib.error:
                self.z = zlib.decompressobj(-15)
        return self.z.decompress(raw, room)

    def flush(self, room: int) -> bytes:
        if self.kind in ("gzip", "deflate"):
            return self.z.decompress(self.z.unconsumed_tail, max(room, 1))
        return b""


class _Clock:
    """Times one fetch from the moment it took its concurrency slot."""

    def __init__(self, asked: float) -> None:
        self.started = time.monotonic()
        self.started_at = now_db()
        self.queued_ms = int((self.started - asked) * 1000)

    def stamp(self, target: Response | FetchError) -> None:
        """Set ``started_at``, ``elapsed_ms`` and ``queued_ms`` on a response or an error."""
        target.started_at = self.started_at
        target.elapsed_ms = int((time.monotonic() - self.started) * 1000)
        target.queued_ms = self.queued_ms


def status_error(response: httpx.Response) -> FetchError:
    """A ``FetchError`` for a non-success status, carrying Retry-After if given."""
    return status_failure(
        response.status_code, response.headers.get("retry-after"), response.reason_phrase or ""
    )


def status_failure(status: int, retry_after_header: str | None, reason: str = "") -> FetchError:
    """A ``FetchError`` for ``status`` (a hint for the usual ones), with its Retry-After."""
    retry_after = parse_retry_after(retry_after_header)
    hint = {
        404: "not found: check the URL",
        410: "gone: the publisher removed this resource; polling stops",
        401: "needs authentication",
        403: "forbidden: the server refuses us",
        429: "rate limited",
        503: "service unavailable",
    }.get(status, reason)
    text = f"HTTP {status} {hint}".strip()
    if retry_after is not None:
        text += f" (Retry-After {retry_after:.0f}s)"
    return FetchError(text, status=status, retry_after=retry_after)


def describe_httpx_error(exc: httpx.HTTPError) -> str:
    """A one-line reason for a transport error."""
    kinds = [
        (httpx.ConnectTimeout, "connection timed out"),
        (httpx.ReadTimeout, "read timed out"),
        (httpx.WriteTimeout, "write timed out"),
        (httpx.PoolTimeout, "timed out waiting for a connection"),
        (httpx.ConnectError, "connection failed"),
        (httpx.RemoteProtocolError, "server broke the HTTP protocol or closed the connection"),
        (httpx.ReadError, "connection error while reading"),
        (httpx.UnsupportedProtocol, "unsupported URL scheme"),
        (httpx.DecodingError, "cannot decode the response body"),
    ]
    for kind, text in kinds:
        if isinstance(exc, kind):
            detail = str(exc).strip()
            text = f"{text} to {where}" if (where := _host_port(exc)) else text
            return f"{text}: {detail}" if detail else text
    return f"{type(exc).__name__}: {exc}"


def _host_port(exc: httpx.HTTPError) -> str:
    """``host:port`` of the request that failed (``""`` when the error has none)."""
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised outside a request
        return ""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{port}" if port else host
