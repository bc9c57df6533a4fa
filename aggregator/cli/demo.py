"""``aggregator demo``: the whole product on an offline story, in seconds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from aggregator import log
from aggregator.cli.common import fail, handles_errors
from aggregator.cli.reading import color_option, use_color
from aggregator.demo import EPOCHS, run_demo


@click.command("demo")
@click.option(
    "--db", "database", metavar="PATH", help="New database to write (default: a temporary one)."
)
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
def demo_command(database: str | None, epochs: int, delay: float, color: bool | None) -> None:
    """Watch a story evolve: no config, no internet.

    Serves a fictional live story of ceasefire talks from a local server,
    polls it a few times with the real pipeline, prints each change as it is
    detected, then the digest, then commands to try on the database it wrote.
    """
    log.configure(level="WARNING")
    if database:
        path = Path(database)
        if path.exists():
            fail(f"{path} already exists; the demo writes a new database (pick another --db)")
    else:
        path = Path(tempfile.mkdtemp(prefix="aggregator-demo-")) / "demo.db"
    run_demo(path, epochs=epochs, delay=delay, color=use_color(color), say=click.echo)


COMMANDS = [demo_command]
