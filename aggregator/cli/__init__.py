"""The ``aggregator`` command. Each command group is one module; register it below."""

from __future__ import annotations

import click

from aggregator import __version__
from aggregator.cli import backup, check, demo, manage, outbox, poll, reading, serve, status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="aggregator")
def main() -> None:
    """Watch evolving news stories: poll feeds, live blogs and articles, keep every version.

    Start with `aggregator demo` (no config, no internet needed), or copy
    write a config with `aggregator init` and run `aggregator poll`.
    """


for module in (
    poll,
    outbox,
    reading,
    status,
    manage,
    check,
    demo,
    serve,
    backup,
):
    for command in module.COMMANDS:
        main.add_command(command)
