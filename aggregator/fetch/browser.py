"""``fetch = "browser"``: load a page in headless Chromium and return the HTML its scripts built.

The result is an ordinary ``Response`` (status, final URL, headers, body), so
it goes through the same parse workers, detection and storage as a fetched
page; an identical rendering has the same body hash and costs no parse, no
version and no event. Conditional requests do not apply.

For each fetch (see ``render``):

* the URL is checked by ``netguard`` as our own fetches are, and a SOCKS5
  ``Guard`` of its own checks every connection the page makes (private and
  link-local addresses refused unless ``[fetch] allow_private``, loopback only
  when the source is on loopback); refusals are the fetch's ``notes``, and a
  refused page address fails the fetch;
* a fresh browser context (nothing kept between fetches), no downloads, no
  permission prompts, dialogs dismissed, opened windows closed;
* the source's ``headers`` go only to requests for its own host (never after a
  redirect to another host, nor from https to http);
* bounded: ``[browser] pages`` at once, ``[browser] timeout`` to load and
  settle, ``[browser] max_transfer`` bytes from the network, ``[fetch]
  max_bytes`` of HTML, ``[browser] memory_limit`` for Chromium's processes.
  Any of these, a crashed renderer or a dead browser is this source's failure.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog

from aggregator import __version__
from aggregator.chromium import BrowserError, Chromium, Tab, shared
from aggregator.config import BrowserConfig, FetchConfig
from aggregator.errors import AggregatorError, BlockedAddress, FetchError
from aggregator.fetch.http import Fetcher, Response, _trusted_hop, status_failure
from aggregator.fetch.netguard import check_url
from aggregator.fetch.socks import Guard
from aggregator.timeutil import now_db

log = structlog.get_logger("aggregator.fetch.browser")

#: Response headers of the document kept on the result (the body is re-encoded as UTF-8).
KEPT_HEADERS = ("cache-control", "expires", "date", "last-modified", "etag")
_OUTER_HTML = (
    "(document.doctype ? new XMLSerializer().serializeToString(document.doctype) + '\\n' : '')"
    " + document.documentElement.outerHTML"
)

_CHROMIUM: weakref.WeakKeyDictionary[Fetcher, Chromium] = weakref.WeakKeyDictionary()
_WARNED: set[tuple[str, str]] = set()


def chromium_for(fetcher: Fetcher, browser: BrowserConfig) -> Chromium:
    """The Chromium this fetcher's pages render in (started on first use, closed with it).

    Raises:
        FetchError: no Chromium is installed.
    """
    found = _CHROMIUM.get(fetcher)
    if found is None:
        try:
            settings = browser.settings()
        except AggregatorError as exc:
            raise FetchError(str(exc)) from None
        found = _CHROMIUM[fetcher] = shared(settings)
        fetcher.attached.append(found.close)
    return found


async def fetch_page(
    fetcher: Fetcher,
    url: str,
    *,
    headers: Mapping[str, str],
    wait_for: str,
    browser: BrowserConfig,
) -> Response:
    """Render ``url`` with this fetcher's Chromium, timed like a fetch (see ``render``)."""
    chromium = chromium_for(fetcher, browser)
    asked = time.monotonic()
    async with fetcher.host_slot(urlsplit(url).hostname or ""):
        started, started_at = time.monotonic(), now_db()
        try:
            response = await render(
                chromium, url, headers=headers, wait_for=wait_for, browser=browser,
                fetch=fetcher.config,
            )  # fmt: skip
        except FetchError as exc:
            exc.started_at, exc.queued_ms = started_at, int((started - asked) * 1000)
            exc.elapsed_ms = int((time.monotonic() - started) * 1000)
            raise
    response.started_at, response.queued_ms = started_at, int((started - asked) * 1000)
    response.elapsed_ms = int((time.monotonic() - started) * 1000)
    return response


async def render(
    chromium: Chromium,
    url: str,
    *,
    headers: Mapping[str, str],
    wait_for: str,
    browser: BrowserConfig,
    fetch: FetchConfig,
) -> Response:
    """Load ``url``, wait until it settles, and return its rendered HTML as a ``Response``.

    Raises:
        FetchError: the page failed, did not settle in time, broke a limit, or its
            address was refused (``BlockedAddress``).
    """
    on_loopback = await check_url(url, allow_loopback=True, allow_private=fetch.allow_private)
    async with Guard(
        allow_loopback=on_loopback,
        allow_private=fetch.allow_private,
        max_bytes=browser.max_transfer,
        connect_timeout=fetch.connect_timeout,
    ) as guard:
        try:
            async with chromium.tab(proxy=guard.url, time_limit=browser.timeout) as tab:
                await _prepare(tab, url, headers, fetch.user_agent)
                document = await tab.navigate(url)
                await tab.settle(wait_for)
                html = await _html(tab, fetch.max_bytes)
                document = tab.document
        except TimeoutError:
            raise FetchError(_unsettled(browser.timeout, wait_for, guard)) from None
        except BrowserError as exc:
            raise _failure(url, exc, guard) from None
        if guard.over_limit:  # the page went on without what was cut: not a faithful copy
            raise FetchError(guard.over_limit)
    _log_refusals(url, guard.refused)
    if document.status is not None and not 200 <= document.status < 300:
        raise status_failure(document.status, document.headers.get("retry-after"))
    body = html.encode("utf-8")
    if len(body) > fetch.max_bytes:
        raise FetchError(f"rendered page too large: {len(body)} bytes > limit {fetch.max_bytes}")
    kept = {k: v for k, v in document.headers.items() if k in KEPT_HEADERS}
    return Response(
        url=url,
        final_url=document.url or url,
        status=document.status or 200,
        headers={**kept, "content-type": "text/html; charset=utf-8"},
        body=body,
        notes=[f"refused by the browser guard: {reason}" for reason in guard.refused],
    )


async def _prepare(tab: Tab, url: str, headers: Mapping[str, str], user_agent: str) -> None:
    """Our product token after Chromium's own user agent; the source's headers, own host only."""
    version = await tab.evaluate("navigator.userAgent")
    ours = user_agent.format(version=__version__)
    agent = f"{version} {ours}".replace("HeadlessChrome", "Chrome")
    await tab.call("Network.setUserAgentOverride", {"userAgent": agent})
    if not headers:
        return
    own = dict(headers)

    def paused(params: dict[str, Any]) -> None:
        request = params.get("request", {})
        sent = {k: v for k, v in request.get("headers", {}).items() if k.lower() not in _lower(own)}
        if _trusted_hop(url, request.get("url", "")):
            sent.update(own)
        command = tab.conn.call(
            "Fetch.continueRequest",
            {
                "requestId": params.get("requestId"),
                # always the full list: a redirect must not carry an earlier hop's headers
                "headers": [{"name": k, "value": str(v)} for k, v in sent.items()],
            },
            session=tab.session,
        )
        task = asyncio.ensure_future(command)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    tab.conn.on("Fetch.requestPaused", paused, tab.session)
    await tab.call("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})


def _lower(headers: Mapping[str, str]) -> set[str]:
    return {k.lower() for k in headers}


async def _html(tab: Tab, limit: int) -> str:
    """The rendered document as HTML, refused before it is read if it passes ``limit``."""
    length = await tab.evaluate(f"({_OUTER_HTML}).length")
    if isinstance(length, int) and length > limit:
        raise FetchError(f"rendered page too large: {length} characters > limit {limit} bytes")
    html = await tab.evaluate(_OUTER_HTML)
    if not isinstance(html, str) or not html.strip():
        raise FetchError("the rendered page is empty")
    return html


def _unsettled(timeout: float, wait_for: str, guard: Guard) -> str:
    if guard.over_limit:
        return guard.over_limit
    what = f"{wait_for!r} never matched" if wait_for else "the network never went idle"
    # not "timed out: ...": that prefix means no response (our network down?) to the scheduler
    return f"the page did not settle within {timeout:g}s ({what}; [browser] timeout)"


def _failure(url: str, exc: BrowserError, guard: Guard) -> FetchError:
    """The fetch failure for a browser error: our refusal or limit first, then Chromium's words."""
    if guard.over_limit:
        return FetchError(guard.over_limit)
    host = urlsplit(url).hostname or ""
    refused = guard.refusal(host)
    if refused and "ERR_" in str(exc):
        return BlockedAddress(refused.split(" ", 1)[1])
    return FetchError(f"browser: {exc}")


def _log_refusals(url: str, refused: list[str]) -> None:
    """Warn once per page and refused host; later repeats are debug (they recur every poll)."""
    for reason in refused:
        key = (url, reason.split(" ", 1)[0])
        report = log.debug if key in _WARNED else log.warning
        _WARNED.add(key)
        report("browser.request_refused", page=url, reason=reason)
