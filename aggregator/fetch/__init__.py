"""Fetching: HTTP with conditional GET, caps, deadlines and a network policy; or a browser.

``fetch_source`` is the one call for a source's page: a plain GET, or (``fetch =
"browser"``) the page rendered in headless Chromium (``aggregator.fetch.browser``).
"""

from __future__ import annotations

from aggregator.config import BrowserConfig, SourceConfig
from aggregator.fetch.browser import fetch_page
from aggregator.fetch.http import Fetcher, Response, describe_httpx_error, parse_retry_after

__all__ = ["Fetcher", "Response", "describe_httpx_error", "fetch_source", "parse_retry_after"]


async def fetch_source(
    fetcher: Fetcher,
    source: SourceConfig,
    url: str,
    *,
    browser: BrowserConfig,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Response:
    """Get ``source``'s document at ``url`` the way the source says (``fetch``).

    Raises:
        FetchError: with a readable reason; the source's failure.
    """
    if source.fetch == "browser":
        return await fetch_page(
            fetcher, url, headers=source.request_headers, wait_for=source.wait_for, browser=browser
        )
    return await fetcher.fetch(
        url, etag=etag, last_modified=last_modified, headers=source.request_headers
    )
