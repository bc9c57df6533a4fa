"""``aggregator copy-to URL``: move a whole SQLite history into an empty PostgreSQL database."""

from __future__ import annotations

import click

from aggregator.cli.common import common_options, database_location, fail, handles_errors
from aggregator.errors import StoreError


@click.command("copy-to")
@click.argument("target", metavar="URL")
@common_options
@handles_errors
def copy_to_command(target: str) -> None:
    """Copy the SQLite database into the empty PostgreSQL database at URL.

    Everything is copied under the same ids: sources with their ETags and
    planned checks (a daemon on the copy answers its first pass with
    conditional requests), entries, versions, changes, the outbox and every
    sink's deliveries. Row counts and a sample of rows are checked after the
    copy. A target that holds any row is refused. Stop the daemon first, so
    nothing is written to the SQLite file meanwhile.
    """
    from aggregator.store.copy import copy_to_postgres
    from aggregator.store.db import is_postgres, mask

    source = database_location("read")
    try:
        if not is_postgres(target):
            fail(f"{target} is not a postgresql:// URL (the copy goes from SQLite to PostgreSQL)")
        if is_postgres(source):
            fail(f"{mask(source)} is already PostgreSQL: the copy reads an SQLite file (--db)")
    except StoreError as exc:
        fail(str(exc), code=2)

    def progress(table: str, rows: int, seconds: float) -> None:
        click.echo(f"  {table:<18} {rows:>10,} rows  {seconds:7.2f} s")

    click.echo(f"copying {source} to {mask(target)}")
    try:
        report = copy_to_postgres(source, target, progress=progress)
    except StoreError as exc:
        fail(str(exc), code=2 if "not empty" in str(exc) else 1)
    total = sum(report.rows.values())
    click.echo(
        f"copied {total:,} rows in {report.total_seconds:.1f} s; row counts match,"
        f" {report.sampled:,} sampled rows identical"
    )
    click.echo(f"next: set [storage] database = {mask(target)!r} and start the daemon")


COMMANDS = [copy_to_command]
