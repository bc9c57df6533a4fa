"""The ``aggregator`` command. Each command group is one module; register it below.

The command modules import only click at import time (what a command does is imported
when it runs), so ``aggregator --help`` and tab completion start quickly.
"""

from __future__ import annotations

import click

from aggregator import __version__
from aggregator.cli import (
    backup,
    check,
    copy,
    demo,
    init,
    manage,
    outbox,
    poll,
    reading,
    serve,
    status,
)
from aggregator.cli.common import common_options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="aggregator")
@common_options
def main() -> None:
    """Watch evolving news stories: poll feeds, live blogs and articles, keep every version.

    Start with `aggregator demo` (no config, no internet needed), or write a config
    with `aggregator init` and run `aggregator poll`. --config, --db and --log-level
    work before any command and after any command's name.

    The manual is the docs/ directory of the source tree (start at docs/index.md;
    `mkdocs serve` there shows it as a site); each command has --help.
    """


for module in (
    poll,
    outbox,
    reading,
    status,
    init,
    manage,
    check,
    demo,
    serve,
    backup,
    copy,
):
    for command in module.COMMANDS:
        main.add_command(command)
