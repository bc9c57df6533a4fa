"""Manage the configured sources: ``init``, ``add``, ``remove``, ``pause``, ``resume``,
``import-opml`` and ``export-opml``. Every edit keeps the file's comments (``config_edit``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aggregator.cli.common import (
    common_options,
    configure_logging,
    database_location,
    fail,
    handles_errors,
    load_config,
    options,
    plural,
)

if TYPE_CHECKING:
    from aggregator import discover
    from aggregator.config import Config
    from aggregator.fetch import Response


@click.command("add")
@common_options
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
@click.option(
    "--fetch",
    type=click.Choice(["http", "browser"]),
    default="http",
    show_default=True,
    help="browser: render the page in Chromium before reading it (for live blogs and pages"
    " that build their posts with script).",
)
@handles_errors
def add_command(
    url: str,
    name: str | None,
    tags: tuple[str, ...],
    interval: str | None,
    kind: str | None,
    fetch: str,
) -> None:
    """Add URL as a source: a feed, or a page whose feed or live blog is discovered.

    An HTML page is searched for <link rel="alternate"> feeds, then for a JSON-LD
    LiveBlogPosting. With --kind, URL itself is checked as that kind (--kind page
    tracks one evolving article). The result is fetched once to check it works,
    then appended to the config file. A page whose posts appear only after its
    script has run is reported with the command that adds it with --fetch browser.
    """
    import asyncio

    from aggregator import config_edit
    from aggregator.config import name_from_url

    config, existing = config_or_starter()
    if fetch == "browser":
        from aggregator.cli.rendering import check_rendered

        found = asyncio.run(check_rendered(config, url, kind))
    else:
        found = asyncio.run(check_as(config, url, kind) if kind else resolve(config, url))
    same = next((s for s in config.sources if s.url == found.url), None)
    if same is not None:
        place = config_edit.locate(config, same.name).file if existing else config.path
        fail(f"{found.url} is already configured: it is source {same.name!r} (in {place})")
    source: dict[str, Any] = {"name": name or name_from_url(found.url), "url": found.url}
    if found.kind != "feed":
        source["kind"] = found.kind
    if fetch == "browser":
        source["fetch"] = "browser"
    source.update({"tags": list(tags), "interval": interval})
    path = Path(config.path)
    old = path.read_text(encoding="utf-8") if existing else config_edit.STARTER
    config_edit.write_checked({path: config_edit.appended_to(old, [source])}, path)
    if not existing:
        click.echo(f"created {path} (no config existed: a commented starter, as `aggregator init`)")
    how = " (rendered in Chromium)" if fetch == "browser" else ""
    click.echo(f"added {found.kind} source {source['name']!r}{how}: {found.url} (to {path})")


def new_config_path() -> Path:
    """Where a new config goes: ``--config``, ``$AGGREGATOR_CONFIG``, or ./aggregator.toml."""
    return Path(options().config or os.environ.get("AGGREGATOR_CONFIG") or "aggregator.toml")


def existing_config() -> Path | None:
    """The config file commands would use, or None if there is none yet."""
    from aggregator import config as config_mod
    from aggregator.errors import ConfigError

    try:
        path = config_mod.find_config(options().config)
    except ConfigError:
        return None
    return path if path.exists() else None


def config_or_starter() -> tuple[Config, bool]:
    """The config, or (when there is none yet) the starter config at its new path, unwritten.

    The second value says whether the config exists on disk.
    """
    from aggregator import config as config_mod
    from aggregator import config_edit

    if existing_config() is not None:
        return load_config(mode=None), True
    configure_logging()
    target = new_config_path()
    return config_mod.parse(tomllib.loads(config_edit.STARTER), str(target)), False


async def resolve(config: Config, url: str) -> discover.Found:
    """Fetch ``url``; return it if it is a feed, else what the page points to (checked)."""
    from aggregator import discover
    from aggregator.errors import ConfigError
    from aggregator.fetch import Fetcher
    from aggregator.parse import PARSERS

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
    from aggregator.cli.rendering import live_blog_after_rendering

    if await live_blog_after_rendering(config, url):
        raise ConfigError(
            f"{url}: no feed or live blog in the page as served; its posts appear only after"
            " rendering (a live blog built by script). Add it rendered in Chromium with:"
            f" aggregator add {url} --fetch browser"
        )
    raise ConfigError(
        f"{url}: no feed or live blog found{tried}; to follow this page itself as one"
        " evolving article, use --kind page"
    )


async def check_as(config: Config, url: str, kind: str) -> discover.Found:
    """Fetch ``url`` once and check it reads as ``kind``."""
    from aggregator import discover
    from aggregator.errors import AggregatorError, ConfigError
    from aggregator.fetch import Fetcher
    from aggregator.parse import get_parser

    async with Fetcher(config.fetch) as fetcher:
        response = await fetcher.fetch(url)
    try:
        get_parser(kind).parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError as exc:
        from aggregator.cli.rendering import entries_after_rendering, rendering_hint

        entries = await entries_after_rendering(config, url, kind)
        hint = rendering_hint(url, kind, entries) if entries else ""
        raise ConfigError(f"{url} does not read as kind {kind!r}: {exc}{hint}") from None
    return discover.Found(response.final_url, kind)


def _reads_as(response: Response, kind: str) -> bool:
    from aggregator.errors import AggregatorError
    from aggregator.parse import get_parser

    try:
        parsed = get_parser(kind).parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError:
        return False
    return bool(parsed.items) or kind == "feed"


@click.command("import-opml")
@common_options
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--into",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write the sources to (default: sources.d/opml.toml next to the config,"
    " included from the config).",
)
@handles_errors
def import_opml_command(
    opml_file: Path,
    into: Path | None,
) -> None:
    """Import the feeds of an OPML file; folder names become tags.

    Feeds already configured (same URL) are skipped; names are made unique. An
    outline that cannot be a source (an ftp:// URL, say) is skipped with a warning;
    the exit status is 1 only if every feed of the file was skipped.
    """
    from aggregator import config_edit, discover

    outlines = discover.read_opml(opml_file.read_bytes(), str(opml_file))
    if not outlines:
        fail(f"{opml_file}: no feeds in it (no <outline> with an xmlUrl)")
    config, existing = config_or_starter()
    new, known, skipped = _importable(config, outlines)
    if not new:
        if skipped == len(outlines):
            fail(f"{opml_file}: nothing importable: all {skipped} feeds were skipped (see above)")
        click.echo(f"nothing to import: {known} feeds already configured, {skipped} skipped")
        return
    path = Path(config.path)
    text = path.read_text(encoding="utf-8") if existing else config_edit.STARTER
    files = {} if existing else {path: text}
    if into is None:
        into = path.parent / "sources.d" / "opml.toml"
        include = config_edit.with_include(text, path)
        if include is not None:
            files[path] = include
    files[into] = config_edit.appended(into, new)
    config_edit.write_checked(files, path)
    if not existing:
        click.echo(f"created {path} (no config existed: a commented starter, as `aggregator init`)")
    click.echo(
        f"imported {plural(len(new), 'source')} into {into}"
        f" ({known} already configured, {skipped} skipped)"
    )


def _importable(
    config: Config, outlines: list[discover.Outline]
) -> tuple[list[dict[str, Any]], int, int]:
    """The new sources of ``outlines``, and how many were already configured or invalid.

    An invalid outline (an ``ftp://`` URL, say) is skipped with a warning naming it.
    """
    from aggregator import config_edit
    from aggregator.config import name_from_url

    urls = {s.url for s in config.sources}
    names = {s.name for s in config.sources}
    new: list[dict[str, Any]] = []
    known = skipped = 0
    for outline in outlines:
        if outline.url in urls:
            known += 1
            continue
        source = {"name": outline.title or name_from_url(outline.url), "url": outline.url}
        problem = config_edit.source_problem(source)
        if problem is not None:
            label = f"{outline.title!r} ({outline.url})" if outline.title else repr(outline.url)
            click.echo(f"aggregator: warning: skipped outline {label}: {problem}", err=True)
            skipped += 1
            continue
        urls.add(outline.url)
        source["name"] = _unique(source["name"], names)
        new.append({**source, "tags": outline.folders})
    return new, known, skipped


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


@click.command("export-opml")
@common_options
@click.option(
    "--output", "-o", metavar="FILE", help="Write to FILE (atomically) instead of stdout."
)
@handles_errors
def export_opml_command(output: str | None) -> None:
    """Print the configured sources as OPML (a source's first tag is its folder)."""
    from aggregator import discover
    from aggregator.cli.reading import write_atomically

    config = load_config(mode=None)
    rows = [{"name": s.name, "url": s.url, "kind": s.kind, "tags": s.tags} for s in config.sources]
    text = discover.write_opml(rows)
    if output:
        write_atomically(output, text if text.endswith("\n") else text + "\n")
        click.echo(f"wrote {output}: {len(rows)} sources", err=True)
    else:
        click.echo(text)


RELOAD_HINT = "A running daemon applies this on `systemctl reload aggregator` (SIGHUP)"


@click.command("remove")
@common_options
@click.argument("name")
@handles_errors
def remove_command(name: str) -> None:
    """Remove source NAME from the config (its history stays in the database).

    The table is cut from the file that defines it (the config or an included
    file); the rest of the file, comments included, is kept.
    """
    from aggregator import config_edit

    config = load_config(mode=None)
    place = config_edit.locate(config, name)
    config_edit.write_checked({place.file: config_edit.removed(place)}, Path(config.path))
    click.echo(
        f"removed source {name!r} from {place.file}. Its history stays in the database"
        f" ({database_location('any', config=config)}): `aggregator history` and `search`"
        f" still find it.\n{RELOAD_HINT}"
    )


@click.command("pause")
@common_options
@click.argument("name")
@handles_errors
def pause_command(name: str) -> None:
    """Stop polling source NAME (sets its `enabled = false`); `resume` undoes it."""
    _set_enabled(load_config(mode=None), name, enabled=False)


@click.command("resume")
@common_options
@click.argument("name")
@handles_errors
def resume_command(name: str) -> None:
    """Poll source NAME again after `aggregator pause` (or `enabled = false`)."""
    _set_enabled(load_config(mode=None), name, enabled=True)


def _set_enabled(config: Config, name: str, *, enabled: bool) -> None:
    from aggregator import config_edit

    place = config_edit.locate(config, name)
    verb = "resumed" if enabled else "paused"
    if config.source(name).enabled == enabled:
        click.echo(f"source {name!r} is already {verb} ({place.file})")
        return
    default = bool(config.defaults.get("enabled", True))
    text = config_edit.with_enabled(place, enabled, default=default)
    config_edit.write_checked({place.file: text}, Path(config.path))
    if enabled:
        click.echo(f"resumed source {name!r} (in {place.file}). {RELOAD_HINT}")
    else:
        click.echo(
            f"paused source {name!r} (enabled = false in {place.file}); its history stays."
            f" `aggregator resume {name}` polls it again. {RELOAD_HINT}"
        )


COMMANDS = [
    add_command,
    remove_command,
    pause_command,
    resume_command,
    import_opml_command,
    export_opml_command,
]
