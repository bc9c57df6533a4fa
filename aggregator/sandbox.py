"""The worker boundary: untrusted response bodies are read in supervised processes.

Everything CPU-bound that touches a publisher's bytes (feedparser and the fast
RSS reader, JSON-LD, trafilatura, markup stripping and normalisation) runs in
a pool of worker processes, never in the daemon:

* what crosses the boundary is plain data: a ``ParseTask`` (the body, the URL,
  the response headers, the kind's validated options, the source's ``ignore``
  patterns and the ``[limits]``) goes in; a ``ParseOutput`` (the ``Parsed``
  items and their ``Snapshot``s) comes back;
* each worker caps its own address space (``RLIMIT_AS``: what it mapped at
  start plus ``[parse] memory_limit``): a parse past it raises ``MemoryError``
  in that worker only;
* each task has a deadline (``[parse] time_limit``): past it, the worker is
  killed and replaced;
* a worker that dies (SIGKILL, the kernel's OOM killer, a crash in C code) is
  replaced; its task fails.

Each of those ends as a ``ParseError`` naming the limit, recorded as that
source's failure, while every other source keeps flowing. The pool is
pebble's ``ProcessPool``: unlike ``concurrent.futures.ProcessPoolExecutor``,
whose whole pool turns ``BrokenProcessPool`` when one worker dies, pebble
kills and replaces just the one worker, and supports a per-task timeout.
Workers are forked from a ``forkserver`` (started clean, with the parsers
preloaded), never from the daemon, whose threads may hold locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import re
import resource
import signal
import time
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import structlog
from pebble import ProcessExpired, ProcessPool
from pydantic import BaseModel

from aggregator.config import LimitsConfig, ParseConfig
from aggregator.errors import ParseError
from aggregator.models import TRACKED_FIELDS, Item, Parsed, Snapshot
from aggregator.normalize import snapshot
from aggregator.parse import get_parser, volatile_patterns
from aggregator.parse.feed import ENTRY_CAP

log = structlog.get_logger("aggregator.sandbox")

#: Modules the fork server imports once, so a new worker starts warm. ``__main__``
#: (the ``aggregator`` script) is among them: multiprocessing re-imports the main
#: module in every child otherwise.
PRELOAD = ["__main__", "aggregator.sandbox"]
MIB = 2**20


@dataclass(frozen=True, slots=True)
class ParseTask:
    """What goes into a worker: one response body and how to read it."""

    kind: str
    body: bytes
    url: str
    headers: Mapping[str, str]
    options: BaseModel | None = None
    ignore: tuple[str, ...] = ()
    max_entries: int = LimitsConfig().max_entries
    max_field_chars: int = LimitsConfig().max_field_chars
    #: Key the single item of a ``page`` read (a followed article's URL) instead of its URL.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class ParseOutput:
    """What comes back: the items, their comparable snapshots and the time taken."""

    parsed: Parsed
    snapshots: list[Snapshot]
    parse_ms: int = 0
    warnings: list[str] = field(default_factory=list)


def run_task(task: ParseTask) -> ParseOutput:
    """Parse and normalise one body (in a worker; callable in-process too).

    Raises:
        ParseError: the body is not something ``task.kind`` can read, or reading it
            needed more memory than the worker may use.
    """
    started = time.perf_counter()
    try:
        parsed = _parse(task)
        ignore = [*volatile_patterns(task.kind), *_compiled(task.ignore)]
        anchors = task.kind == "liveblog"  # a post's link keeps its #anchor
        snapshots = [snapshot(item, ignore, keep_fragment=anchors) for item in parsed.items]
    except MemoryError:
        raise ParseError(memory_reason(_allowance)) from None
    except RecursionError:
        raise ParseError("the document is nested too deeply to read") from None
    elapsed = int((time.perf_counter() - started) * 1000)
    return ParseOutput(parsed, snapshots, elapsed, list(parsed.warnings))


def _parse(task: ParseTask) -> Parsed:
    cap = ENTRY_CAP.set(task.max_entries)
    try:
        parsed = get_parser(task.kind).parse(
            task.body, url=task.url, headers=task.headers, options=task.options
        )
    finally:
        ENTRY_CAP.reset(cap)
    if task.key is not None:
        parsed = dataclasses.replace(
            parsed, items=[dataclasses.replace(i, key=task.key) for i in parsed.items]
        )
    return apply_limits(parsed, task.max_entries, task.max_field_chars)


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


def apply_limits(parsed: Parsed, max_entries: int, max_field_chars: int) -> Parsed:
    """Cut the item list and over-long fields to the configured limits."""
    items, complete, warnings = parsed.items, parsed.complete, list(parsed.warnings)
    if len(items) > max_entries:
        warnings.append(f"{len(items)} entries, keeping the first {max_entries}")
        items, complete = items[:max_entries], False
    cap = max_field_chars
    if any(len(getattr(i, f)) > cap for i in items for f in TRACKED_FIELDS):
        items = [_cut_fields(i, cap) for i in items]
        warnings.append(f"fields longer than {cap} characters were cut")
    return dataclasses.replace(parsed, items=items, complete=complete, warnings=warnings)


def _cut_fields(item: Item, cap: int) -> Item:
    cut = {f: getattr(item, f)[:cap] for f in TRACKED_FIELDS if len(getattr(item, f)) > cap}
    return dataclasses.replace(item, **cut) if cut else item


def memory_reason(limit: int) -> str:
    """The failure reason of a parse that ran out of its memory allowance."""
    cap = f"{limit // MIB} MiB" if limit > 0 else "the memory available"
    return (
        f"parsing this response needed more than {cap} ([parse] memory_limit); nothing was stored"
    )


#: This worker's ``[parse] memory_limit`` (0: uncapped), for the failure reason.
_allowance = 0


def address_space() -> int:
    """Bytes of address space this process has mapped now (0 where /proc cannot say)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize()


def _worker_init(memory_limit: int) -> None:
    """Runs in each new worker: cap its memory, and be the first the OOM killer picks.

    The cap is what the worker has mapped at start plus ``memory_limit``: a worker
    forked from a process that imported much (the CLI and its plugins map ~190 MiB
    of shared libraries and reserved arenas, most of it never resident) still has
    ``memory_limit`` to parse with.
    """
    global _allowance
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    with contextlib.suppress(OSError, ValueError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = address_space() + memory_limit
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
        _allowance = memory_limit
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")


def rlimit_allowed() -> bool:
    """Whether this process may set resource limits (a seccomp filter may refuse)."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, resource.getrlimit(resource.RLIMIT_AS))
    except OSError:
        return False
    return True


class ParsePool:
    """A supervised pool of parse workers, started on first use."""

    def __init__(self, config: ParseConfig | None = None) -> None:
        self.config = config or ParseConfig()
        self._pool: ProcessPool | None = None
        #: Whether workers can cap their memory (known once the pool has started).
        self.memory_capped: bool | None = None

    def start(self) -> ParsePool:
        """Start the workers now rather than at the first parse (the daemon does)."""
        self._start().schedule(os.getpid)  # pebble starts its workers at the first task
        return self

    def _start(self) -> ProcessPool:
        if self._pool is None:
            self.memory_capped = rlimit_allowed()
            if not self.memory_capped:
                log.warning(
                    "parse.memory_limit_unavailable",
                    reason="setrlimit is refused here (a seccomp filter?)",
                    effect="workers run without their own memory cap; the OOM killer"
                    " picks a worker first",
                )
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            self._pool = ProcessPool(
                max_workers=self.config.workers,
                max_tasks=self.config.tasks_per_worker,
                initializer=_worker_init,
                initargs=(self.config.memory_limit,),
                context=context,
            )
        return self._pool

    async def parse(self, task: ParseTask) -> ParseOutput:
        """Run ``task`` in a worker; a limit hit or a worker's death is a ``ParseError``.

        When a worker dies before it took its task, pebble gives up on the whole
        pool (``BrokenProcessPool``); the pool is then restarted and the task tried
        once more, so a crash costs at most the task that caused it. An unexpected
        exception in the parser (a bug) is a ``ParseError`` too, logged with its
        traceback, so the source's failure is recorded like any other.
        """
        try:
            return await self._run(task)
        except BrokenProcessPool as exc:
            self._restart(exc)
        try:
            return await self._run(task)
        except BrokenProcessPool as exc:
            self._restart(exc)
            raise ParseError(died_reason(None, self.config.memory_limit)) from None

    async def _run(self, task: ParseTask) -> ParseOutput:
        try:
            future = self._start().schedule(run_task, args=(task,), timeout=self.config.time_limit)
        except RuntimeError as exc:  # pebble: the pool is no longer running
            raise BrokenProcessPool(str(exc)) from None
        try:
            return await asyncio.wrap_future(future)
        except (ParseError, BrokenProcessPool):
            raise
        except TimeoutError:
            raise ParseError(
                f"parsing this response took longer than {self.config.time_limit:g}s"
                " ([parse] time_limit); the worker was stopped and nothing was stored"
            ) from None
        except ProcessExpired as exc:
            raise ParseError(died_reason(exc.exitcode, self.config.memory_limit)) from None
        except Exception as exc:
            log.error("parse.crashed", error=repr(exc), traceback=getattr(exc, "traceback", None))
            raise ParseError(
                f"the {task.kind} parser failed on this response ({type(exc).__name__}: {exc});"
                " nothing was stored (a bug: please report it with the response)"
            ) from None

    def _restart(self, exc: BaseException) -> None:
        pool = self._pool
        if pool is not None and pool.active:
            return  # another task restarted it already
        self._pool = None
        log.warning("parse.pool_restarted", reason=f"{type(exc).__name__}: {exc}")
        if pool is not None:
            _stop(pool)

    def pids(self) -> list[int]:
        """The process ids of the live workers (for tests and status)."""
        if self._pool is None:
            return []
        workers = self._pool._pool_manager.worker_manager.workers  # no public accessor
        return [pid for pid, proc in list(workers.items()) if proc.is_alive()]

    def close(self) -> None:
        """Stop the workers (running tasks are abandoned) and wait for them to exit."""
        if self._pool is not None:
            _stop(self._pool)
            self._pool = None


def _stop(pool: ProcessPool) -> None:
    """Stop ``pool``'s workers and reap them."""
    pool.stop()
    with contextlib.suppress(RuntimeError, TimeoutError):
        pool.join(timeout=10)


def died_reason(exitcode: int | None, memory_limit: int) -> str:
    """The failure reason of a task whose worker process died under it."""
    if exitcode is None:
        how = "died"
    elif exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"exited with status {exitcode}"
    hint = "" if exitcode != -signal.SIGKILL else " (out of memory?)"
    return (
        f"the parse worker {how}{hint} while reading this response"
        f" (memory limit {memory_limit // MIB} MiB per worker); nothing was stored"
    )
