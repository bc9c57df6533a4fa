"""What ``check`` and ``add`` say about pages whose posts appear only after rendering.

When a live blog or page reads as nothing when fetched plainly, the URL is loaded
once in Chromium (if installed); if the rendered page does read, the message says
so and gives the option (``fetch = "browser"``) or the command that adds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from aggregator.chromium import find_executable
from aggregator.config import BROWSER_KINDS, Config
from aggregator.discover import Found, is_live_blog
from aggregator.errors import AggregatorError, ConfigError
from aggregator.fetch import Fetcher, Response
from aggregator.fetch.browser import fetch_page
from aggregator.parse import get_parser


async def render_once(
    config: Config, url: str, headers: Mapping[str, str] | None = None, wait_for: str = ""
) -> Response:
    """``url`` rendered in Chromium (a Chromium of its own, stopped afterwards).

    Raises:
        FetchError: as a browser source's poll would fail.
    """
    async with Fetcher(config.fetch) as fetcher:
        return await fetch_page(
            fetcher, url, headers=headers or {}, wait_for=wait_for, browser=config.browser
        )


async def entries_after_rendering(config: Config, url: str, kind: str) -> int:
    """How many entries ``url`` reads as ``kind`` once rendered; 0 if none or no Chromium."""
    if kind not in BROWSER_KINDS or find_executable(config.browser.executable) is None:
        return 0
    try:
        response = await render_once(config, url)
        parsed = get_parser(kind).parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError:
        return 0
    return len(parsed.items)


async def live_blog_after_rendering(config: Config, url: str) -> bool:
    """Whether ``url``, rendered, is a live blog whose posts read (JSON-LD LiveBlogPosting)."""
    if find_executable(config.browser.executable) is None:
        return False
    try:
        response = await render_once(config, url)
    except AggregatorError:
        return False
    if is_live_blog(response.body) is None:
        return False
    try:
        parsed = get_parser("liveblog").parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError:
        return False
    return bool(parsed.items)


def rendering_hint(url: str, kind: str, entries: int) -> str:
    """The sentence that says the posts appear only after rendering, and what to do."""
    return (
        f"; its posts appear only after rendering (the page builds them with script):"
        f' rendered in Chromium it reads as {kind} ({entries} entries). Set fetch = "browser"'
        f" on the source, or add it with: aggregator add {url} --kind {kind} --fetch browser"
    )


def no_chromium_hint(config: Config) -> str:
    """For a page that reads as nothing: rendering might help, once Chromium is installed."""
    if find_executable(config.browser.executable) is not None:
        return ""
    return (
        '; if the page builds its posts with script, fetch = "browser" renders it first'
        " (needs Chromium: apt-get install chromium)"
    )


async def check_rendered(config: Config, url: str, kind: str | None) -> Found:
    """Render ``url`` once and check it reads as ``kind`` (default: a live blog)."""
    if kind not in (None, *BROWSER_KINDS):
        raise ConfigError(f"--fetch browser is for kinds {', '.join(BROWSER_KINDS)}, not {kind}")
    response = await render_once(config, url)
    chosen = kind or "liveblog"
    try:
        get_parser(chosen).parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError as exc:
        other = "" if kind else "; to follow it as one evolving article, add --kind page"
        raise ConfigError(
            f"{url}, rendered, does not read as kind {chosen!r}: {exc}{other}"
        ) from None
    return Found(response.final_url, chosen)
