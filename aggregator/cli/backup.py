"""``aggregator backup FILE``: a consistent copy of the database, safe while the daemon runs."""

from __future__ import annotations

import time
from pathlib import Path

import click

from aggregator.cli.common import common_options, database_location, fail, handles_errors


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@common_options
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@handles_errors
def backup_command(file: Path, force: bool) -> None:
    """Copy the database to FILE: one consistent instant, while the daemon writes.

    The database is --db, else the config's [storage] database. FILE is written
    compactly (SQLite's VACUUM INTO), checked, then renamed into place; an
    existing FILE is kept unless --force. A database that does not exist is
    an error (nothing is backed up), never an empty copy.
    """
    from aggregator.store.backup import backup

    source = database_location("read")
    if file.exists() and not force:
        fail(f"{file} exists: choose another name, or --force to replace it")
    started = time.monotonic()
    result = backup(source, file)
    took = time.monotonic() - started
    click.echo(
        f"backed up {source} to {result.path}: {_size(result.bytes)} in {took:.2f} s"
        f" (quick_check: {result.check})"
    )


def _size(count: int) -> str:
    """``812.0 KiB``, ``23.4 MiB``."""
    return f"{count / 1024:,.1f} KiB" if count < 2**20 else f"{count / 2**20:,.1f} MiB"


COMMANDS = [backup_command]
