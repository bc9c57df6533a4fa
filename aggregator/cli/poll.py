"""``aggregator poll`` (one pass) and ``aggregator run`` (the daemon)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import click

from aggregator.cli.common import config_options, handles_errors, load_config
from aggregator.config import Config
from aggregator.fetch import Fetcher
from aggregator.notify import images
from aggregator.notify.worker import delivering_after
from aggregator.pipeline import Pipeline, PollResult
from aggregator.sandbox import ParsePool
from aggregator.scheduler import Daemon
from aggregator.store.retention import prune
from aggregator.store.thread import StoreThread


@click.command("poll")
@config_options
@click.option("--source", "-s", "names", multiple=True, help="Poll only this source (repeatable).")
@handles_errors
def poll_command(
    config_path: str | None, database: str | None, log_level: str, names: tuple[str, ...]
) -> None:
    """Poll every source once, store what changed, print a summary, exit.

    \b
    Exit status (for cron, systemd timers and scripts):
      0  the pass ran and at least one source succeeded (or none is enabled)
      1  every polled source failed (network down? each failure is listed)
      2  usage or config error: nothing was polled

    Some sources failing is still 0, so one flaky feed does not fail every
    run; each failure is printed, logged as a warning and counted in
    `aggregator sources`.
    """
    config = load_config(config_path, database, log_level)
    if not any(s.enabled for s in config.sources) and not names:
        click.echo(
            f"aggregator: {config.path} has no enabled [[sources]]: nothing to poll"
            " (add one, e.g. `aggregator add URL`)",
            err=True,
        )
    results = asyncio.run(poll_once(config, names))
    click.echo(summarise(results))
    sys.exit(exit_status(results))


async def poll_once(config: Config, names: tuple[str, ...] = ()) -> list[PollResult]:
    """One pass over the chosen (default: all enabled) sources."""
    unknown = set(names) - {s.name for s in config.sources}
    if unknown:
        raise click.UsageError(f"no source named {', '.join(sorted(unknown))} in {config.path}")
    chosen = [s for s in config.sources if (s.name in names if names else s.enabled)]
    images.use(config)  # the sinks' pictures come from this config's database
    store = StoreThread(config.storage.database, failing_after=config.notify.failing_after)
    parsers = ParsePool(config.parse)
    try:
        async with delivering_after(config, store), Fetcher(config.fetch) as fetcher:
            pipeline = Pipeline(config, store, fetcher, parsers)
            await pipeline.sync()
            results = await pipeline.poll_all(chosen)
        await store.call(prune, store.store.db, config.storage)  # [storage] retention
        return results
    finally:
        parsers.close()
        store.close()


def summarise(results: list[PollResult]) -> str:
    """One line: sources polled, failures, and counts of each kind of change."""
    counts: Counter[str] = Counter()
    for result in results:
        counts.update(result.counts)
    failed = [r for r in results if not r.ok]
    parts = [f"{len(results)} sources polled", f"{len(failed)} failed"]
    parts += [f"{counts[k]} {k}" for k in ("new", "changed", "removed", "restored")]
    parts += [f"{counts['moved']} moved"] if counts["moved"] else []
    lines = [", ".join(parts)]
    lines += [f"  failed: {r.source}: {r.error}" for r in failed]
    return "\n".join(lines)


def exit_status(results: list[PollResult]) -> int:
    """1 when every polled source failed, else 0 (see ``poll --help``)."""
    return 1 if results and not any(r.ok for r in results) else 0


@click.command("run")
@config_options
@handles_errors
def run_command(config_path: str | None, database: str | None, log_level: str) -> None:
    """Run the daemon: poll each source on its interval until SIGTERM or Ctrl-C."""
    config = load_config(config_path, database, log_level)
    asyncio.run(Daemon(config).run())


COMMANDS = [poll_command, run_command]
