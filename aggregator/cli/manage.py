"""``aggregator add``, ``import-opml`` and ``export-opml``: manage the configured sources."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from aggregator import config_edit, discover
from aggregator.cli.common import config_options, fail, handles_errors, load_config
from aggregator.config import Config, name_from_url
from aggregator.errors import AggregatorError, ConfigError
from aggregator.fetch import Fetcher, Response
from aggregator.parse import PARSERS, get_parser


@click.command("add")
@config_options
@click.argument("url")
@click.option("--name", help="Name for the source (default: host and path of the feed).")
@click.option("--tag", "tags", multiple=True, help="Tag to add (repeatable).")
@click.option("--interval", help="Polling interval, e.g. 10m (default: [defaults] or 15m).")
@click.option(
    "--kind",
    type=click.Choice(["feed", "liveblog", "page"]),
    help="Track URL itself as this kind instead of discovering (e.g. --kind page for one"
    " evolving article).",
)
@handles_errors
def add_command(
    config_path: str | None,
    database: str | None,
    log_level: str,
    url: str,
    name: str | None,
    tags: tuple[str, ...],
    interval: str | None,
    kind: str | None,
) -> None:
    """Add URL as a source: a feed, or a page whose feed or live blog is discovered.

    An HTML page is searched for <link rel="alternate"> feeds, then for a JSON-LD
    LiveBlogPosting. With --kind, URL itself is checked as that kind (--kind page
    tracks one evolving article). The result is fetched once to check it works,
    then appended to the config file.
    """
    config = load_config(config_path, database, log_level)
    found = asyncio.run(check_as(config, url, kind) if kind else resolve(config, url))
    if any(s.url == found.url for s in config.sources):
        fail(f"{found.url} is already configured", code=1)
    source: dict[str, Any] = {"name": name or name_from_url(found.url), "url": found.url}
    if found.kind != "feed":
        source["kind"] = found.kind
    source.update({"tags": list(tags), "interval": interval})
    path = Path(config.path)
    config_edit.write_checked({path: config_edit.appended(path, [source])}, path)
    click.echo(f"added {found.kind} source {source['name']!r}: {found.url} (to {path})")


async def resolve(config: Config, url: str) -> discover.Found:
    """Fetch ``url``; return it if it is a feed, else what the page points to (checked)."""
    async with Fetcher(config.fetch) as fetcher:
        response = await fetcher.fetch(url)
        if _reads_as(response, "feed"):
            return discover.Found(response.final_url, "feed")
        links = discover.feed_links(response.body, response.final_url)
        for link in links:
            feed = await fetcher.fetch(link.url)
            if _reads_as(feed, "feed"):
                return discover.Found(feed.final_url, "feed", link.title)
        if discover.is_live_blog(response.body) is not None:
            if "liveblog" not in PARSERS:
                raise ConfigError(
                    f"{url} is a live blog (JSON-LD LiveBlogPosting) but this installation"
                    " has no 'liveblog' source kind"
                )
            if _reads_as(response, "liveblog"):
                return discover.Found(response.final_url, "liveblog")
    tried = f" (tried {', '.join(link.url for link in links)})" if links else ""
    raise ConfigError(
        f"{url}: no feed or live blog found{tried}; to follow this page itself as one"
        " evolving article, use --kind page"
    )


async def check_as(config: Config, url: str, kind: str) -> discover.Found:
    """Fetch ``url`` once and check it reads as ``kind``."""
    async with Fetcher(config.fetch) as fetcher:
        response = await fetcher.fetch(url)
    try:
        get_parser(kind).parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError as exc:
        raise ConfigError(f"{url} does not read as kind {kind!r}: {exc}") from None
    return discover.Found(response.final_url, kind)


def _reads_as(response: Response, kind: str) -> bool:
    try:
        parsed = get_parser(kind).parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError:
        return False
    return bool(parsed.items) or kind == "feed"


@click.command("import-opml")
@config_options
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--into",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write the sources to (default: sources.d/opml.toml next to the config,"
    " included from the config).",
)
@handles_errors
def import_opml_command(
    config_path: str | None,
    database: str | None,
    log_level: str,
    opml_file: Path,
    into: Path | None,
) -> None:
    """Import the feeds of an OPML file; folder names become tags.

    Feeds already configured (same URL) are skipped; names are made unique.
    """
    config = load_config(config_path, database, log_level)
    outlines = discover.read_opml(opml_file.read_bytes(), str(opml_file))
    path = Path(config.path)
    urls = {s.url for s in config.sources}
    names = {s.name for s in config.sources}
    new = []
    for outline in outlines:
        if outline.url in urls:
            continue
        urls.add(outline.url)
        name = _unique(outline.title or name_from_url(outline.url), names)
        new.append({"name": name, "url": outline.url, "tags": outline.folders})
    if not new:
        click.echo(f"nothing to import: all {len(outlines)} feeds are already configured")
        return
    files: dict[Path, str] = {}
    if into is None:
        into = path.parent / "sources.d" / "opml.toml"
        include = config_edit.ensure_include(path)
        if include is not None:
            files[path] = include
    files[into] = config_edit.appended(into, new)
    config_edit.write_checked(files, path)
    skipped = len(outlines) - len(new)
    click.echo(f"imported {len(new)} sources into {into} ({skipped} already configured)")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


@click.command("export-opml")
@config_options
@handles_errors
def export_opml_command(config_path: str | None, database: str | None, log_level: str) -> None:
    """Print the configured sources as OPML (a source's first tag is its folder)."""
    config = load_config(config_path, database, log_level)
    rows = [{"name": s.name, "url": s.url, "kind": s.kind, "tags": s.tags} for s in config.sources]
    click.echo(discover.write_opml(rows))


COMMANDS = [add_command, import_opml_command, export_opml_command]
