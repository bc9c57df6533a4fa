"""``aggregator outbox``: what each sink has pending or failed; retry, drop, deliver now.

Every subcommand reads an existing database: none of them creates one.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from aggregator.cli.common import (
    common_options,
    fail,
    handles_errors,
    load_config,
    plural,
)

if TYPE_CHECKING:
    from aggregator.config import Config
    from aggregator.store import Store

#: What ``retry`` and ``drop`` act on: a delivery not delivered yet (nor dropped).
OPEN = ("failed", "pending")
#: ``aggregator.store.outbox.STATUSES``, written out so that ``--help`` imports no store
#: (a test checks that the two agree).
STATUSES = ("pending", "delivered", "failed", "dropped")


@contextmanager
def _store() -> Iterator[Store]:
    """The config's database (``--db`` first), which must exist; closed afterwards."""
    from aggregator.store import Store

    store = Store.open(load_config(mode="read").storage.database)
    try:
        yield store
    finally:
        store.close()


@click.group("outbox", invoke_without_command=True)
@common_options
@click.pass_context
@handles_errors
def outbox_command(ctx: click.Context) -> None:
    """Show, per sink, how many deliveries are pending, delivered, failed or dropped."""
    if ctx.invoked_subcommand is not None:
        return
    with _store() as store:
        rows = store.delivery_counts()
        backlog = {b.sink: b for b in store.backlogs()}
    if not rows:
        click.echo("no sinks have been set up yet (add [[sinks]] and run poll or run)")
    for row in rows:
        counts = ", ".join(f"{row[s]} {s}" for s in STATUSES)
        state = "" if row["active"] else " (not configured now)"
        click.echo(f"{row['name']} [{row['kind']}]{state}: {counts}")
        if (queue := backlog.get(row["name"])) and (queue.pending or queue.delivered_last_minute):
            click.echo(f"  {_backlog_text(queue)}")


def _backlog_text(queue: Any) -> str:
    """``12 pending (3 in flight), oldest waiting 4s, 15.2 events/s over the last minute``."""
    from aggregator.cli.status import sink_line

    return sink_line(dataclasses.asdict(queue)).split(": ", 1)[1]


@outbox_command.command("list")
@common_options
@click.option("--sink", help="Only this sink.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Statuses to show (repeatable). Default: pending and failed.",
)
@click.option("--limit", default=100, show_default=True)
@handles_errors
def list_command(sink: str | None, statuses: tuple[str, ...], limit: int) -> None:
    """List deliveries, oldest first: id, sink, status, attempts, event, last error."""
    with _store() as store:
        _check_sink(store, sink)
        rows = store.list_deliveries(statuses or OPEN[::-1], sink, limit)
    for r in rows:
        folded = f" +{r['folded']} folded" if r["folded"] else ""
        retry = f" next try {r['next_attempt_at']}" if r["next_attempt_at"] else ""
        click.echo(
            f"{r['id']}\t{r['sink']}\t{r['status']}\t{plural(r['attempts'], 'attempt')}\t"
            f"{r['type']} {r['event_id']}{folded} ({r['created_at']}){retry}"
        )
        if r["last_error"]:
            click.echo(f"\t{r['last_error']}")


@outbox_command.command("retry")
@common_options
@click.argument("ids", nargs=-1, type=int)
@click.option("--sink", help="Only this sink.")
@handles_errors
def retry_command(ids: tuple[int, ...], sink: str | None) -> None:
    """Queue failed deliveries again and end any backoff (all, or these IDS / this sink).

    Exits 1 when an ID or the sink does not exist, or an ID is delivered or dropped.
    """
    with _store() as store:
        _check_sink(store, sink)
        wrong = _not_open(store, ids, "retried")
        count = store.set_delivery_status("pending", OPEN, _open_ids(ids, wrong), sink)
    if ids or sink or count:
        click.echo(f"{plural(count, 'delivery')} queued for the next delivery pass")
    else:
        click.echo("nothing to retry: no failed or pending deliveries")
    _exit_if(wrong)


@outbox_command.command("drop")
@common_options
@click.argument("ids", nargs=-1, type=int)
@click.option("--sink", help="Only this sink.")
@click.option("--all", "everything", is_flag=True, help="Drop every pending and failed delivery.")
@handles_errors
def drop_command(ids: tuple[int, ...], sink: str | None, everything: bool) -> None:
    """Give up on pending/failed deliveries (IDS, or all of --sink, or --all).

    Exits 1 when an ID or the sink does not exist, or an ID is delivered or dropped.
    """
    if not (ids or sink or everything):
        fail("say what to drop: delivery IDS, --sink NAME or --all", code=2)
    with _store() as store:
        _check_sink(store, sink)
        wrong = _not_open(store, ids, "dropped")
        count = store.set_delivery_status("dropped", OPEN, _open_ids(ids, wrong), sink)
    click.echo(f"{plural(count, 'delivery')} dropped")
    _exit_if(wrong)


def _check_sink(store: Store, sink: str | None) -> None:
    """Exit 1 naming the known sinks when ``sink`` was never set up."""
    if sink is None:
        return
    names = [row["name"] for row in store.delivery_counts()]
    if sink not in names:
        known = f"the sinks are: {', '.join(names)}" if names else "no sink has been set up yet"
        fail(f"no sink named {sink!r} ({known})")


def _not_open(store: Store, ids: tuple[int, ...], verb: str) -> dict[int, str]:
    """What is wrong with each of ``ids`` that does not exist or is not pending/failed."""
    statuses = store.delivery_statuses(list(ids))
    wrong = {}
    for delivery in ids:
        status = statuses.get(delivery)
        if status is None:
            wrong[delivery] = f"no delivery {delivery} (see `aggregator outbox list`)"
        elif status not in OPEN:
            wrong[delivery] = (
                f"delivery {delivery} is {status}: only pending or failed ones are {verb}"
            )
    return wrong


def _open_ids(ids: tuple[int, ...], wrong: dict[int, str]) -> list[int]:
    """``ids`` less the wrong ones; ``[-1]`` (which matches nothing) when none is left."""
    if not ids:
        return []
    return [i for i in ids if i not in wrong] or [-1]


def _exit_if(wrong: dict[int, str]) -> None:
    """Print each problem and exit 1, when there is any."""
    for line in wrong.values():
        click.echo(f"aggregator: {line}", err=True)
    if wrong:
        raise SystemExit(1)


@outbox_command.command("deliver")
@common_options
@handles_errors
def deliver_command() -> None:
    """Send everything that is due now to the configured sinks, then exit."""
    import asyncio

    counts = asyncio.run(_deliver(load_config(mode="read")))
    click.echo(
        f"{counts['delivered']} delivered, {counts['retry']} to retry later,"
        f" {counts['failed']} failed"
    )


async def _deliver(config: Config) -> Counter[str]:
    """One delivery pass; the count of each outcome (0 for an outcome that did not occur)."""
    from aggregator.notify.worker import DeliveryWorker
    from aggregator.store.thread import StoreThread

    store = StoreThread(config.storage.database, failing_after=config.notify.failing_after)
    worker = DeliveryWorker(config, store)
    try:
        return Counter(await worker.run_once())
    finally:
        await worker.aclose()
        store.close()


COMMANDS = [outbox_command]
