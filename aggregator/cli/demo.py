"""``aggregator demo``: the whole product on an offline story, in seconds."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.cli.common import (
    common_options,
    configure_logging,
    database_location,
    handles_errors,
)
from aggregator.cli.reading import color_option, use_color

#: States of the demo story (``aggregator.demo.story.EPOCHS``, checked by a test).
EPOCHS = 4


@click.command("demo")
@common_options
@click.option(
    "--epochs",
    type=click.IntRange(1, EPOCHS),
    default=EPOCHS,
    show_default=True,
    help="How many states of the story to poll.",
)
@click.option(
    "--delay",
    type=click.FloatRange(0, 60),
    default=1.0,
    show_default=True,
    help="Seconds to wait between polls.",
)
@color_option
@handles_errors
def demo_command(epochs: int, delay: float, color: bool | None) -> None:
    """Watch a story evolve: no config, no internet.

    Serves a fictional live story of ceasefire talks from a local server,
    polls it a few times with the real pipeline, prints each change as it is
    detected, then the digest, then commands to try on the database it wrote.
    --db names a new database to write (default: a temporary one); the config
    is not read.
    """
    from aggregator.demo import run_demo

    configure_logging("WARNING")
    path = Path(database_location("new", default=_temporary_database))
    # `python3 -m aggregator demo` suggests commands in the same form: in a virtual
    # environment that is not activated, `aggregator` alone is not on the PATH.
    invoked = click.get_current_context().find_root().info_name or ""
    prog = "python3 -m aggregator" if invoked.startswith("python") else "aggregator"
    run_demo(path, epochs=epochs, delay=delay, color=use_color(color), say=click.echo, prog=prog)


def _temporary_database() -> str:
    import tempfile

    return str(Path(tempfile.mkdtemp(prefix="aggregator-demo-")) / "demo.db")


COMMANDS = [demo_command]
