"""``aggregator check`` (fetch and parse one source, store nothing) and ``config check``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from aggregator.cli.common import (
    LazyChoice,
    common_options,
    configure_logging,
    fail,
    handles_errors,
    load_config,
    options,
    plural,
    register_plugins,
)
from aggregator.cli.manage import existing_config

if TYPE_CHECKING:
    from aggregator.config import Config, SourceConfig
    from aggregator.fetch import Response
    from aggregator.sandbox import ParseOutput


def _kinds() -> list[str]:
    from aggregator.parse import PARSERS

    return sorted(PARSERS)


@click.command("check")
@click.argument("target", metavar="URL|NAME")
@click.option(
    "--kind",
    type=LazyChoice(_kinds),
    help="Read it as this kind (default: the source's kind; feed for a URL).",
)
@click.option(
    "--fetch",
    type=click.Choice(["http", "browser"]),
    help="http: a plain GET; browser: render it in Chromium first (default: the source's).",
)
@common_options
@handles_errors
def check_command(target: str, kind: str | None, fetch: str | None) -> None:
    """Fetch and parse URL (or configured source NAME) once; show what would be stored.

    Prints the entry count, each entry's key and title, and the parser's
    warnings. Nothing is written: no database is opened. Exit status 1 if the
    fetch or the parse fails (the reason is printed). A live blog or page that
    reads as nothing is rendered in Chromium once (when installed), and the
    message says if its posts appear only after rendering.
    """
    import asyncio

    register_plugins()
    config = _config()
    source = _source(config, target, kind, fetch)
    response, output = asyncio.run(fetch_and_parse(config, source))
    click.echo(report(source, response, output))


def _config() -> Config:
    """The config if there is one (a URL needs none: then the defaults)."""
    from aggregator import config as config_mod

    if existing_config() is None:
        if options().config:
            fail(f"{options().config}: file not found", code=2)
        configure_logging("WARNING")
        return config_mod.parse({}, "<defaults>")
    return load_config(log_level="WARNING", mode=None)


def _source(config: Config, target: str, kind: str | None, fetch: str | None) -> SourceConfig:
    """The configured source named ``target`` (or with that URL), else a URL of ``kind``.

    ``kind`` and ``fetch``, when given, replace the source's own.
    """
    from aggregator import config as config_mod

    for source in config.sources:
        if target in (source.name, source.url):
            update = {k: v for k, v in (("kind", kind), ("fetch", fetch)) if v}
            source = source.model_copy(update=update)
            if source.fetch == "browser" and source.kind not in config_mod.BROWSER_KINDS:
                fail(f"--fetch browser is for kinds {', '.join(config_mod.BROWSER_KINDS)}")
            return source
    if not target.lower().startswith(("http://", "https://")):
        where = f" in {config.path}" if config.sources else ""
        fail(f"{target!r} is not an http(s) URL, nor the name of a configured source{where}")
    raw = {"url": target, "kind": kind or ("page" if fetch == "browser" else "feed")}
    parsed = config_mod.parse({"sources": [{**raw, "fetch": fetch or "http"}]}, target)
    return parsed.sources[0]


async def fetch_and_parse(config: Config, source: SourceConfig) -> tuple[Response, ParseOutput]:
    """One fetch (with the source's headers) and one parse in a worker; nothing stored."""
    from aggregator.errors import FetchError, ParseError
    from aggregator.fetch import Fetcher, fetch_source
    from aggregator.parse import validate_options
    from aggregator.pipeline import parse_task
    from aggregator.sandbox import ParsePool

    try:
        async with Fetcher(config.fetch) as fetcher:
            response = await fetch_source(fetcher, source, source.url, browser=config.browser)
    except FetchError as exc:
        raise FetchError(f"{source.url}: fetch failed: {exc}") from None
    options = validate_options(source.kind, source.options)
    task = parse_task(source, response, config.limits, options)
    parsers = ParsePool(config.parse)
    try:
        output = await parsers.parse(task)
    except ParseError as exc:
        hint = _hint(source, response) or await _rendering_hint(config, source)
        raise ParseError(
            f"{response.final_url}: does not read as kind {source.kind!r}: {exc}{hint}"
        ) from None
    finally:
        parsers.close()
    return response, output


async def _rendering_hint(config: Config, source: SourceConfig) -> str:
    """For a page or live blog fetched plainly: whether its posts appear once rendered."""
    from aggregator import config as config_mod
    from aggregator.cli.rendering import (
        entries_after_rendering,
        no_chromium_hint,
        rendering_hint,
    )

    if source.fetch != "http" or source.kind not in config_mod.BROWSER_KINDS:
        return ""
    entries = await entries_after_rendering(config, source.url, source.kind)
    if entries:
        return rendering_hint(source.url, source.kind, entries)
    return no_chromium_hint(config)


def _hint(source: SourceConfig, response: Response) -> str:
    """For a page read as a feed: the feeds it links, else the kinds that read pages."""
    from aggregator import discover

    if source.kind != "feed":
        return ""
    links = discover.feed_links(response.body, response.final_url)
    if links:
        return f"; the page links a feed: check {links[0].url}"
    return " (a page? try --kind page or --kind liveblog)"


def report(source: SourceConfig, response: Response, output: ParseOutput) -> str:
    """What a poll would store: the entries' keys and titles, and the warnings."""
    parsed = output.parsed
    lines = [
        f"{response.final_url}: HTTP {response.status}, {len(response.body)} bytes"
        f"{' (rendered in Chromium)' if source.fetch == 'browser' else ''},"
        f" read as {source.kind}: {len(parsed.items)} entries (parsed in {output.parse_ms} ms)"
    ]
    lines += [f"note: {note}" for note in response.notes]
    if response.moved_to:
        lines.append(f"moved permanently to {response.moved_to}: update the source's url")
    if parsed.title:
        lines.append(f"title: {parsed.title}")
    lines += [f"  {item.key}  {item.title or '(untitled)'}" for item in parsed.items]
    lines += [f"warning: {warning}" for warning in output.warnings]
    if not parsed.complete:
        lines.append("note: the listing is incomplete, so a poll would mark nothing removed")
    lines.append("nothing was stored (check only)")
    return "\n".join(lines)


@click.group("config")
@common_options
def config_group() -> None:
    """Work with the config file."""


@config_group.command("check")
@common_options
def config_check_command() -> None:
    """Validate the config without polling (e.g. before `systemctl reload aggregator`).

    \b
    Exit status:
      0  valid ("valid: N sources, M sinks")
      2  not valid: the file, key path and problem are printed
    """
    config = load_config(log_level="WARNING", mode=None)
    paused = sum(not s.enabled for s in config.sources)
    extra = f" ({paused} paused)" if paused else ""
    click.echo(
        f"{config.path}: valid: {plural(len(config.sources), 'source')},"
        f" {plural(len(config.sinks), 'sink')}{extra}"
    )


COMMANDS = [check_command, config_group]
