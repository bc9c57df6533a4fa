"""Reading what changed: ``digest``, ``history``, ``diff``, ``search``, ``sources``.

Every command opens the database read-only, so it is safe while the daemon
runs, and never creates one. The database is ``--db``, else the config's
``[storage] database`` when a config file is found, else ``$AGGREGATOR_DB`` /
``./aggregator.db`` (``common.database_location``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from aggregator.cli.common import (
    LazyChoice,
    common_options,
    database_location,
    fail,
    found_config,
    handles_errors,
)
from aggregator.cli.status import configured_state

if TYPE_CHECKING:
    from aggregator.config import Config
    from aggregator.store.queries import Reader, VersionRow

F = TypeVar("F", bound=Callable[..., Any])


def _formats() -> tuple[str, ...]:
    from aggregator.digest import FORMATS

    return tuple(FORMATS)


@contextmanager
def open_reader(config: Config | None = None) -> Iterator[Reader]:
    """A read-only ``Reader`` on the chosen database (which must exist), closed afterwards."""
    from aggregator.store.queries import Reader

    reader = Reader.open(database_location("read", config=config))
    try:
        yield reader
    finally:
        reader.close()


def use_color(choice: bool | None, output: str | None = None) -> bool:
    """Colour when asked, or by default when writing to a terminal."""
    if choice is not None:
        return choice
    return output is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


color_option = click.option(
    "--color/--no-color", default=None, help="Colour diffs (default: when writing to a terminal)."
)


def db_time(text: str, option: str) -> str:
    """A user-given time (``2022-03-10``, ``2022-03-10 07:00``, ISO 8601) as database text."""
    from aggregator.timeutil import iso_to_db

    value = text.strip()
    if len(value) == 10:
        value += "T00:00:00"
    converted = iso_to_db(value)
    if converted is None:
        raise click.BadParameter(
            f"{text!r} is not a time; use e.g. 2022-03-10 or '2022-03-10 07:00' (UTC)",
            param_hint=option,
        )
    return converted


def window(since: str | None, start: str | None, end: str | None) -> tuple[str, str]:
    """The ``[since, until)`` window from ``--since`` or ``--from``/``--to``."""
    from aggregator.timeutil import ago, now_db, parse_duration

    if since and (start or end):
        raise click.UsageError("use either --since or --from/--to, not both")
    until = db_time(end, "--to") if end else now_db()
    if start:
        begin = db_time(start, "--from")
        if begin >= until:
            raise click.BadParameter("--from must be earlier than --to", param_hint="--from")
        return begin, until
    try:
        seconds = parse_duration(since or "24h")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    return ago(seconds), until


def _mode_for(target: Path) -> int:
    """The existing file's permissions, else the usual ones under the current umask."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (never half-written)."""
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).chmod(_mode_for(target))  # mkstemp makes 0600; keep what a reader expects
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.command("digest")
@common_options
@click.option("--since", metavar="DURATION", help="Changes in the last DURATION (default 24h).")
@click.option("--from", "start", metavar="TIME", help="Start of the window (UTC).")
@click.option("--to", "end", metavar="TIME", help="End of the window (UTC, default now).")
@click.option("--source", "-s", "sources", multiple=True, help="Only this source (repeatable).")
@click.option("--format", "-f", "fmt", type=LazyChoice(_formats), default="text", show_default=True)
@click.option(
    "--output", "-o", metavar="FILE", help="Write to FILE (atomically) instead of stdout."
)
@click.option(
    "--with-first-listing",
    is_flag=True,
    help="Also the stories of sources' first listings (their baseline, left out by default).",
)
@color_option
@handles_errors
def digest_command(
    since: str | None,
    start: str | None,
    end: str | None,
    sources: tuple[str, ...],
    fmt: str,
    output: str | None,
    with_first_listing: bool,
    color: bool | None,
) -> None:
    """What changed, grouped by story, newest activity first, with word diffs."""
    from aggregator.digest import build_digest, render

    begin, until = window(since, start, end)
    with open_reader() as reader:
        unknown = set(sources) - set(reader.source_names()) if sources else set()
        if unknown:
            raise click.UsageError(f"no source named {', '.join(sorted(unknown))}")
        digest = build_digest(
            reader, begin, until, list(sources) or None, first_listing=with_first_listing
        )
    text = render(digest, fmt, color=fmt == "text" and use_color(color, output))
    if output:
        write_atomically(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False, color=True)


@click.command("history")
@common_options
@click.argument("entry")
@color_option
@handles_errors
def history_command(entry: str, color: bool | None) -> None:
    """Every version of ENTRY with its time and what changed.

    ENTRY is an entry id, key or URL, a source's name (a page source has one
    entry), a prefix of a key or URL, or words it contains.
    """
    from aggregator.digest.model import group_stories
    from aggregator.digest.text import render_story

    with open_reader() as reader:
        found = reader.resolve_entry(entry)
        rows = reader.entry_changes(found.id)
    plural = "s" if found.version_count != 1 else ""
    click.echo(f"entry {found.id} · key {found.key} · {found.version_count} version{plural}")
    if found.removed_at:
        click.echo(f"removed from the source since {found.removed_at[:16]}")
    for story in group_stories(rows):
        click.echo(render_story(story, color=use_color(color)), nl=False, color=True)


@click.command("diff")
@common_options
@click.argument("entry")
@click.option("--from", "old", type=int, metavar="N", help="Older version (default: M-1).")
@click.option("--to", "new", type=int, metavar="M", help="Newer version (default: latest).")
@click.option(
    "--image",
    metavar="FILE.png",
    help="Write the diff as a picture (a PNG card, 1200 px wide) to FILE.png; needs Chromium.",
)
@color_option
@handles_errors
def diff_command(
    entry: str,
    old: int | None,
    new: int | None,
    image: str | None,
    color: bool | None,
) -> None:
    """The word diff of ENTRY between versions N and M.

    ENTRY is as for `history`: id, key, URL, source name, prefix or words.
    With --image, the diff is drawn as a card (headline and text diffs, the
    source, the link and both times) in headless Chromium and written as PNG.
    Exits 1 when there is nothing to compare (the entry has one version).
    """
    with open_reader() as reader:
        found = reader.resolve_entry(entry)
        versions = {v.version: v for v in reader.versions(found.id)}
    if len(versions) == 1 and old is None:
        fail(
            f"entry {found.id} has only one version so far: nothing to compare"
            f" (see it with `aggregator history {found.id}`)"
        )
    new = new if new is not None else max(versions)
    old = old if old is not None else new - 1
    missing = [n for n in (new, old) if n not in versions]
    if missing:
        have = f"1 to {max(versions)}" if len(versions) > 1 else "only version 1"
        raise click.UsageError(f"entry {found.id} has no version {missing[0]} (it has {have})")
    if image:
        from aggregator.cli.images import image_config, write_diff_image

        config = image_config()
        width, height = write_diff_image(config, found.id, old, new, image)
        click.echo(f"wrote {image} ({width}x{height} px): entry {found.id}, v{old} → v{new}")
        return
    click.echo(
        f"[{found.source}] {found.title}\n"
        f"v{old} ({versions[old].seen_at[:16]}) → v{new} ({versions[new].seen_at[:16]})"
    )
    click.echo(version_diff(versions[old], versions[new], use_color(color)), color=True)


def version_diff(old: VersionRow, new: VersionRow, color: bool) -> str:
    """Each tracked field that differs, as a full word diff."""
    from aggregator.diff import render_ansi, render_markers, word_diff
    from aggregator.models import TRACKED_FIELDS

    render = render_ansi if color else render_markers
    parts = []
    for name in TRACKED_FIELDS:
        column = name if name in ("title", "link", "author") else f"{name}_text"
        before, after = getattr(old, column), getattr(new, column)
        if before != after:
            parts.append(f"\n{name}:\n{render(word_diff(before, after))}")
    return "".join(parts) or "\n(no difference)"


@click.command("search")
@common_options
@click.argument("text", nargs=-1, required=True)
@click.option("--limit", default=50, show_default=True, help="At most this many versions.")
@handles_errors
def search_command(text: tuple[str, ...], limit: int) -> None:
    """Full-text search over every version, including text since edited out.

    Best matches first; when more than 5,000 versions match, the best of the
    newest 5,000. Exits 1 when no version matches, like grep.
    """
    from aggregator.store.queries import SEARCH_RANKED

    with open_reader() as reader:
        hits, partial = reader.search_ranked(" ".join(text), limit=limit)
    if not hits:
        fail(f"no version matches {' '.join(text)!r}")
    by_entry: dict[int, list[Any]] = {}
    for hit in hits:
        by_entry.setdefault(hit.entry.id, []).append(hit)
    for group in by_entry.values():
        entry = group[0].entry
        click.echo(f"[{entry.source}] {entry.title}  (entry {entry.id}, key {entry.key})")
        for hit in sorted(group, key=lambda h: h.version):
            snippet = hit.snippet.replace("\x02", "»").replace("\x03", "«").replace("\n", " ")
            click.echo(f"  v{hit.version} {hit.seen_at[:16]}: {snippet}")
        if not any(h.current for h in group):
            click.echo(f"  (no longer in the current version v{entry.version_count})")
    if partial:
        click.echo(f"(more versions match: these are the best of the newest {SEARCH_RANKED:,})")


@click.command("sources")
@common_options
@handles_errors
def sources_command() -> None:
    """Each source: kind, interval, last success, last error, failures, entries, versions.

    A source paused or removed in the config is marked so at once, before the next poll.
    Below the table: where WebSub push stands for each source a hub was found for, and
    why push is off when it is.
    """
    from aggregator.store.websub import report
    from aggregator.websub.report import push_lines

    config = found_config()
    with open_reader(config) as reader:
        rows = reader.sources()
        push = report(reader.db)
    if not rows:
        click.echo("no sources yet: run `aggregator poll` with a config")
        return
    header = ("name", "kind", "interval", "last success", "failures", "entries", "versions")
    table = [header] + [
        _source_row(r, configured_state(r["name"], r["active"], config)) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    lines += [
        f"{r['name']}: last error {r['last_error_at'][:16]}: {r['last_error']}"
        for r in rows
        if r["last_error"]
    ]
    lines += push_lines(push, config.websub.callback if config else None, config is not None)
    click.echo("\n".join(lines))  # one write: 10,000 sources are 10,000 lines


def _source_row(row: dict[str, Any], state: str | None) -> tuple[str, ...]:
    name = row["name"] + (f" ({state})" if state else "")
    return (
        name,
        row["kind"],
        _duration(row["interval_seconds"]),
        (row["last_success_at"] or "never")[:16],
        str(row["consecutive_failures"]),
        str(row["entries"]),
        str(row["versions"]),
    )


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


COMMANDS = [digest_command, history_command, diff_command, search_command, sources_command]
