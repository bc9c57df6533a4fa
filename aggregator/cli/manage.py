"""Manage the configured sources: ``init``, ``add``, ``remove``, ``pause``, ``resume``,
``import-opml`` and ``export-opml``. Every edit keeps the file's comments (``config_edit``).
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from pathlib import Path
from typing import Any

import click

from aggregator import config as config_mod
from aggregator import config_edit, discover, log
from aggregator.cli.common import config_options, fail, handles_errors, load_config
from aggregator.cli.rendering import (
    check_rendered,
    entries_after_rendering,
    live_blog_after_rendering,
    rendering_hint,
)
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
    config_path: str | None,
    database: str | None,
    log_level: str,
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
    config, existing = config_or_starter(config_path, database, log_level)
    if fetch == "browser":
        found = asyncio.run(check_rendered(config, url, kind))
    else:
        found = asyncio.run(check_as(config, url, kind) if kind else resolve(config, url))
    if any(s.url == found.url for s in config.sources):
        fail(f"{found.url} is already configured", code=1)
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


def new_config_path(config_path: str | None) -> Path:
    """Where a new config goes: ``--config``, ``$AGGREGATOR_CONFIG``, or ./aggregator.toml."""
    return Path(config_path or os.environ.get("AGGREGATOR_CONFIG") or "aggregator.toml")


def existing_config(config_path: str | None) -> Path | None:
    """The config file commands would use, or None if there is none yet."""
    try:
        path = config_mod.find_config(config_path)
    except ConfigError:
        return None
    return path if path.exists() else None


def config_or_starter(
    config_path: str | None, database: str | None, log_level: str
) -> tuple[Config, bool]:
    """The config, or (when there is none yet) the starter config at its new path, unwritten.

    The second value says whether the config exists on disk.
    """
    path = existing_config(config_path)
    if path is not None:
        return load_config(str(path), database, log_level), True
    log.configure(level=log_level)
    target = new_config_path(config_path)
    return config_mod.parse(tomllib.loads(config_edit.STARTER), str(target)), False


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
    async with Fetcher(config.fetch) as fetcher:
        response = await fetcher.fetch(url)
    try:
        get_parser(kind).parse(
            response.body, url=response.final_url, headers=response.headers, options=None
        )
    except AggregatorError as exc:
        entries = await entries_after_rendering(config, url, kind)
        hint = rendering_hint(url, kind, entries) if entries else ""
        raise ConfigError(f"{url} does not read as kind {kind!r}: {exc}{hint}") from None
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

    Feeds already configured (same URL) are skipped; names are made unique. An
    outline that cannot be a source (an ftp:// URL, say) is skipped with a warning;
    the exit status is 1 only if every feed of the file was skipped.
    """
    outlines = discover.read_opml(opml_file.read_bytes(), str(opml_file))
    if not outlines:
        fail(f"{opml_file}: no feeds in it (no <outline> with an xmlUrl)")
    config, existing = config_or_starter(config_path, database, log_level)
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
        f"imported {len(new)} sources into {into} ({known} already configured, {skipped} skipped)"
    )


def _importable(
    config: Config, outlines: list[discover.Outline]
) -> tuple[list[dict[str, Any]], int, int]:
    """The new sources of ``outlines``, and how many were already configured or invalid.

    An invalid outline (an ``ftp://`` URL, say) is skipped with a warning naming it.
    """
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
@config_options
@handles_errors
def export_opml_command(config_path: str | None, database: str | None, log_level: str) -> None:
    """Print the configured sources as OPML (a source's first tag is its folder)."""
    config = load_config(config_path, database, log_level)
    rows = [{"name": s.name, "url": s.url, "kind": s.kind, "tags": s.tags} for s in config.sources]
    click.echo(discover.write_opml(rows))


RELOAD_HINT = "A running daemon applies this on `systemctl reload aggregator` (SIGHUP)"


@click.command("init")
@click.option(
    "--config",
    "-c",
    "config_path",
    metavar="FILE",
    help="Where to write it. Default: $AGGREGATOR_CONFIG, else ./aggregator.toml.",
)
@handles_errors
def init_command(config_path: str | None) -> None:
    """Write a commented starter config (never over an existing one)."""
    found = existing_config(config_path)
    if found is not None:
        where = "" if config_path else " (the config commands here already use)"
        fail(
            f"{found} already exists{where}; not overwritten. Edit it, or pass"
            " --config FILE to write a new one elsewhere"
        )
    path = new_config_path(config_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(config_edit.STARTER)
    except FileExistsError:
        fail(f"{path} already exists; not overwritten")
    except OSError as exc:
        fail(f"{path}: cannot write: {exc.strerror or exc}")
    flag = f" --config {path}" if config_path else ""
    click.echo(
        f"wrote {path}: a commented starter config.\n"
        f"next: aggregator add URL{flag}   (a feed, or a page that links one),"
        f" then aggregator poll{flag}"
    )


@click.command("remove")
@config_options
@click.argument("name")
@handles_errors
def remove_command(
    config_path: str | None, database: str | None, log_level: str, name: str
) -> None:
    """Remove source NAME from the config (its history stays in the database).

    The table is cut from the file that defines it (the config or an included
    file); the rest of the file, comments included, is kept.
    """
    config = load_config(config_path, database, log_level)
    place = config_edit.locate(config, name)
    config_edit.write_checked({place.file: config_edit.removed(place)}, Path(config.path))
    click.echo(
        f"removed source {name!r} from {place.file}. Its history stays in the database"
        f" ({config.storage.database}): `aggregator history` and `search` still find it.\n"
        + RELOAD_HINT
    )


@click.command("pause")
@config_options
@click.argument("name")
@handles_errors
def pause_command(config_path: str | None, database: str | None, log_level: str, name: str) -> None:
    """Stop polling source NAME (sets its `enabled = false`); `resume` undoes it."""
    _set_enabled(load_config(config_path, database, log_level), name, enabled=False)


@click.command("resume")
@config_options
@click.argument("name")
@handles_errors
def resume_command(
    config_path: str | None, database: str | None, log_level: str, name: str
) -> None:
    """Poll source NAME again after `aggregator pause` (or `enabled = false`)."""
    _set_enabled(load_config(config_path, database, log_level), name, enabled=True)


def _set_enabled(config: Config, name: str, *, enabled: bool) -> None:
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
    init_command,
    add_command,
    remove_command,
    pause_command,
    resume_command,
    import_opml_command,
    export_opml_command,
]
