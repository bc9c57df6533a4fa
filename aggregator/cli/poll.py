"""``aggregator poll`` (one pass) and ``aggregator run`` (the daemon)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from aggregator.cli.common import common_options, fail, handles_errors, load_config, plural

if TYPE_CHECKING:
    import signal

    from aggregator.config import Config, SourceConfig
    from aggregator.pipeline import Pipeline, PollResult

T = TypeVar("T")


@dataclass
class Progress:
    """How far a pass got: the sources chosen, the polls that finished (and were stored)."""

    total: int = 0
    finished: list[PollResult] = field(default_factory=list)
    stopped_by: signal.Signals | None = None


@click.command("poll")
@common_options
@click.option("--source", "-s", "names", multiple=True, help="Poll only this source (repeatable).")
@handles_errors
def poll_command(names: tuple[str, ...]) -> None:
    """Poll every source once, store what changed, print a summary, exit.

    \b
    Exit status (for cron, systemd timers and scripts):
      0  the pass ran and at least one source succeeded (or none is enabled)
      1  every polled source failed (network down? each failure is listed)
      2  usage or config error: nothing was polled
      130 / 143  interrupted by Ctrl-C / stopped by SIGTERM: the polls that
         finished are stored, and the message says how many

    Some sources failing is still 0, so one flaky feed does not fail every
    run; each failure is printed, logged as a warning and counted in
    `aggregator sources`.
    """
    import asyncio
    import signal

    config = load_config()
    if not any(s.enabled for s in config.sources) and not names:
        click.echo(
            f"aggregator: {config.path} has no enabled [[sources]]: nothing to poll"
            " (add one, e.g. `aggregator add URL`)",
            err=True,
        )
    progress = Progress()
    try:
        results = asyncio.run(_until_signal(poll_once(config, names, progress), progress))
    except (KeyboardInterrupt, asyncio.CancelledError):
        stopped_by = progress.stopped_by or signal.SIGINT
        click.echo(interrupted(progress, stopped_by), err=True)
        sys.exit(128 + stopped_by)
    click.echo(summarise(results))
    sys.exit(exit_status(results))


async def _until_signal(pass_: Coroutine[Any, Any, T], progress: Progress) -> T:
    """Run ``pass_``; SIGTERM cancels it like Ctrl-C does (finished polls stay stored)."""
    import asyncio
    import signal

    task = asyncio.ensure_future(pass_)
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        progress.stopped_by = signum
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
    try:
        return await task
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def interrupted(progress: Progress, stopped_by: signal.Signals) -> str:
    """What an interrupted pass kept, in one message."""
    done = len(progress.finished)
    rest = progress.total - done
    failed = sum(not r.ok for r in progress.finished)
    kept = f" ({failed} of them failed)" if failed else ""
    return (
        f"aggregator: poll interrupted by {stopped_by.name}: {done} of"
        f" {plural(progress.total, 'source')} polled and stored{kept}; {rest} not polled,"
        " nothing half-written. Notifications of the stored changes wait in the outbox"
        " (`aggregator outbox deliver`); run `aggregator poll` again for the rest"
    )


async def poll_once(
    config: Config, names: tuple[str, ...] = (), progress: Progress | None = None
) -> list[PollResult]:
    """One pass over the chosen (default: all enabled) sources."""
    import asyncio

    from aggregator.fetch import Fetcher
    from aggregator.notify.worker import delivering_after
    from aggregator.pipeline import Pipeline
    from aggregator.sandbox import ParsePool
    from aggregator.store.retention import prune
    from aggregator.store.thread import StoreThread

    unknown = set(names) - {s.name for s in config.sources}
    if unknown:
        raise click.UsageError(f"no source named {', '.join(sorted(unknown))} in {config.path}")
    chosen = [s for s in config.sources if (s.name in names if names else s.enabled)]
    progress = progress if progress is not None else Progress()
    progress.total = len(chosen)
    from aggregator.notify import images

    images.use(config)  # the sinks' pictures come from this config's database
    store = StoreThread(config.storage.database, failing_after=config.notify.failing_after)
    parsers = ParsePool(config.parse)
    try:
        async with delivering_after(config, store), Fetcher(config.fetch) as fetcher:
            pipeline = Pipeline(config, store, fetcher, parsers)
            await pipeline.sync()
            results = list(await asyncio.gather(*(_counted(pipeline, s, progress) for s in chosen)))
        await store.call(prune, store.store.db, config.storage)  # [storage] retention
        return results
    finally:
        parsers.close()
        store.close()


async def _counted(pipeline: Pipeline, source: SourceConfig, progress: Progress) -> PollResult:
    result = await pipeline.poll(source)
    progress.finished.append(result)
    return result


def summarise(results: list[PollResult]) -> str:
    """One line: sources polled, failures, and counts of each kind of change."""
    counts: Counter[str] = Counter()
    for result in results:
        counts.update(result.counts)
    failed = [r for r in results if not r.ok]
    parts = [plural(len(results), "source") + " polled", f"{len(failed)} failed"]
    parts += [f"{counts[k]} {k}" for k in ("new", "changed", "removed", "restored")]
    parts += [f"{counts['moved']} moved"] if counts["moved"] else []
    lines = [", ".join(parts)]
    lines += [f"  failed: {r.source}: {r.error}" for r in failed]
    return "\n".join(lines)


def exit_status(results: list[PollResult]) -> int:
    """1 when every polled source failed, else 0 (see ``poll --help``)."""
    return 1 if results and not any(r.ok for r in results) else 0


@click.command("run")
@common_options
@handles_errors
def run_command() -> None:
    """Run the daemon: poll each source on its interval until SIGTERM or Ctrl-C."""
    import asyncio

    from aggregator.scheduler import Daemon

    config = load_config()
    try:
        asyncio.run(Daemon(config).run())
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        fail("stopped before the shutdown finished", code=130)


COMMANDS = [poll_command, run_command]
