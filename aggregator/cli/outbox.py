"""``aggregator outbox``: what each sink has pending or failed; retry, drop, deliver now."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import click

from aggregator.cli.common import config_options, fail, handles_errors, load_config
from aggregator.config import Config
from aggregator.notify.worker import DeliveryWorker
from aggregator.store import Store
from aggregator.store.outbox import STATUSES
from aggregator.store.thread import StoreThread


@contextmanager
def _store(config: Config) -> Iterator[Store]:
    store = Store.open(config.storage.database)
    try:
        yield store
    finally:
        store.close()


@click.group("outbox", invoke_without_command=True)
@config_options
@click.pass_context
@handles_errors
def outbox_command(
    ctx: click.Context, config_path: str | None, database: str | None, log_level: str
) -> None:
    """Show, per sink, how many deliveries are pending, delivered, failed or dropped."""
    ctx.obj = load_config(config_path, database, log_level)
    if ctx.invoked_subcommand is not None:
        return
    with _store(ctx.obj) as store:
        rows = store.delivery_counts()
    if not rows:
        click.echo("no sinks have been set up yet (add [[sinks]] and run poll or run)")
    for row in rows:
        counts = ", ".join(f"{row[s]} {s}" for s in STATUSES)
        state = "" if row["active"] else " (not configured now)"
        click.echo(f"{row['name']} [{row['kind']}]{state}: {counts}")


@outbox_command.command("list")
@click.option("--sink", help="Only this sink.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Statuses to show (repeatable). Default: pending and failed.",
)
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
@handles_errors
def list_command(config: Config, sink: str | None, statuses: tuple[str, ...], limit: int) -> None:
    """List deliveries, oldest first: id, sink, status, attempts, event, last error."""
    with _store(config) as store:
        rows = store.list_deliveries(statuses or ("pending", "failed"), sink, limit)
    for r in rows:
        folded = f" +{r['folded']} folded" if r["folded"] else ""
        retry = f" next try {r['next_attempt_at']}" if r["next_attempt_at"] else ""
        click.echo(
            f"{r['id']}\t{r['sink']}\t{r['status']}\t{r['attempts']} attempts\t"
            f"{r['type']} {r['event_id']}{folded} ({r['created_at']}){retry}"
        )
        if r["last_error"]:
            click.echo(f"\t{r['last_error']}")


@outbox_command.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--sink", help="Only this sink.")
@click.pass_obj
@handles_errors
def retry_command(config: Config, ids: tuple[int, ...], sink: str | None) -> None:
    """Queue failed deliveries again and end any backoff (all, or these IDS / this sink)."""
    with _store(config) as store:
        count = store.set_delivery_status("pending", ("failed", "pending"), list(ids), sink)
    click.echo(f"{count} deliveries queued for the next delivery pass")


@outbox_command.command("drop")
@click.argument("ids", nargs=-1, type=int)
@click.option("--sink", help="Only this sink.")
@click.option("--all", "everything", is_flag=True, help="Drop every pending and failed delivery.")
@click.pass_obj
@handles_errors
def drop_command(config: Config, ids: tuple[int, ...], sink: str | None, everything: bool) -> None:
    """Give up on pending/failed deliveries (IDS, or all of --sink, or --all)."""
    if not (ids or sink or everything):
        fail("say what to drop: delivery IDS, --sink NAME or --all", code=2)
    with _store(config) as store:
        count = store.set_delivery_status("dropped", ("failed", "pending"), list(ids), sink)
    click.echo(f"{count} deliveries dropped")


@outbox_command.command("deliver")
@click.pass_obj
@handles_errors
def deliver_command(config: Config) -> None:
    """Send everything that is due now to the configured sinks, then exit."""
    counts = asyncio.run(_deliver(config))
    click.echo(
        f"{counts['delivered']} delivered, {counts['retry']} to retry later,"
        f" {counts['failed']} failed"
    )


async def _deliver(config: Config) -> Counter[str]:
    """One delivery pass; the count of each outcome (0 for an outcome that did not occur)."""
    store = StoreThread(config.storage.database, failing_after=config.notify.failing_after)
    worker = DeliveryWorker(config, store)
    try:
        return Counter(await worker.run_once())
    finally:
        await worker.aclose()
        store.close()


COMMANDS = [outbox_command]
