"""``aggregator init``: write the commented example config, never over an existing one."""

from __future__ import annotations

import os
from pathlib import Path

import click

from aggregator.cli.common import common_options, database_location, fail, handles_errors, options
from aggregator.cli.manage import existing_config, new_config_path


@click.command("init")
@common_options
@handles_errors
def init_command() -> None:
    """Write the commented example config (never over an existing one).

    It goes to --config FILE, else $AGGREGATOR_CONFIG, else ./aggregator.toml. Its
    [storage] database is --db PATH when given, else aggregator.db beside it.
    """
    from aggregator import config_edit

    given = options().config
    found = existing_config()
    if found is not None:
        fail(
            f"{found} already exists{'' if given else _found_as(found)}; not overwritten."
            " Edit it, or pass --config FILE to write a new one elsewhere"
        )
    path = new_config_path()
    text = config_edit.STARTER
    if options().db:
        database = database_location("any")
        if "://" not in database:  # written relative to nothing: as given, from here
            database = str(Path(database).resolve())
        text = config_edit.with_database(text, database)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        fail(f"{path} already exists; not overwritten")
    except OSError as exc:
        fail(f"{path}: cannot write: {exc.strerror or exc}")
    flag = f" --config {path}" if given else ""
    click.echo(
        f"wrote {path}: a commented starter config.\n"
        f"next: aggregator add URL{flag}   (a feed, or a page that links one),"
        f" then aggregator poll{flag}"
    )


def _found_as(found: Path) -> str:
    """How the commands find ``found``: what makes it the config here."""
    if os.environ.get("AGGREGATOR_CONFIG"):
        return " (named by $AGGREGATOR_CONFIG)"
    if found == Path("aggregator.toml"):
        return " (in this directory: the config every command run here reads)"
    return " (your user config, read by every command that finds no ./aggregator.toml)"


COMMANDS = [init_command]
