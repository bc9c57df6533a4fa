"""One poll of one source: fetch -> parse -> normalize -> detect -> store.

``Pipeline.poll`` never raises for a source's own failure: a transport error,
a bad status, an unreadable body or a parse past its limits is recorded in
``fetches`` (and the source's failure count) and returned in the
``PollResult``, and the pass goes on with the other sources.

Where each step runs: fetching on the event loop; parsing and normalising in
a worker process of the ``ParsePool`` (``aggregator.sandbox``: memory- and
time-bounded, so a hostile body cannot stall or bloat the daemon); detection
and the write on the store's thread, which does nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from aggregator.config import Config, LimitsConfig, SourceConfig
from aggregator.detect import detect
from aggregator.errors import FetchError, ParseError, StoreError
from aggregator.fetch import Fetcher, Response, fetch_source
from aggregator.fetchlog import error_record, fetch_record
from aggregator.follow import companion_specs, follow_articles, follows
from aggregator.models import Hints
from aggregator.parse import validate_options
from aggregator.sandbox import ParseOutput, ParsePool, ParseTask
from aggregator.store import FetchRecord, FetchState, LeaseLost, SourceSpec, Store
from aggregator.store.thread import StoreThread
from aggregator.timeutil import now_db
from aggregator.websub.discover import Discovery, discover

log = structlog.get_logger("aggregator.pipeline")

#: Polls in progress (fetching, parsing or being written) at most, per fetch slot
#: and parse worker: what bounds memory when parsing or the single SQLite writer
#: is slower than the network (a cold poll of 10,000 feeds).
IN_FLIGHT_PER_SLOT = 4


@dataclass(slots=True)
class PollResult:
    """What one poll did, for the scheduler and the CLI."""

    source: str
    outcome: str
    counts: Counter[str] = field(default_factory=Counter)
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    #: The publisher's last scheduling hints (from the last poll that parsed the source).
    hints: Hints = field(default_factory=Hints)
    cache_max_age: float | None = None
    #: What the response said about WebSub push (None: not known from this poll).
    push_links: Discovery | None = None
    #: The own dates (database text, None if undated) of the entries this poll found new.
    new_dates: tuple[str | None, ...] = ()

    @property
    def ttl_seconds(self) -> int | None:
        """RSS ``<ttl>`` in seconds, from the last poll that parsed the source."""
        return self.hints.ttl_seconds

    @property
    def skip_hours(self) -> frozenset[int]:
        """RSS ``<skipHours>``, from the last poll that parsed the source."""
        return self.hints.skip_hours

    @property
    def ok(self) -> bool:
        """True unless the poll failed."""
        return self.outcome != "error"


def source_specs(config: Config) -> list[SourceSpec]:
    """The store's view of the configured sources."""
    specs = [SourceSpec(s.name, s.kind, s.url, s.interval) for s in config.sources]
    return specs + companion_specs(config)  # "<feed>/articles" of follow_links feeds


class Pipeline:
    """Polls sources into the store. Owns nothing; closes nothing."""

    def __init__(
        self, config: Config, store: StoreThread, fetcher: Fetcher, parsers: ParsePool
    ) -> None:
        self.config = config
        self.store = store
        self.fetcher = fetcher
        self.parsers = parsers
        self.source_ids: dict[str, int] = {}
        self._options: dict[str, Any] = {}
        #: The publisher's last scheduling hints per source, so they still apply after
        #: polls that parse nothing (304, identical body).
        self.hints: dict[str, Hints] = {}
        slots = config.fetch.concurrency + config.parse.workers
        #: Polls in progress at most (the daemon claims no more than this at once).
        self.capacity = IN_FLIGHT_PER_SLOT * slots
        self._in_flight = asyncio.Semaphore(self.capacity)
        #: Called with (source, result) after each poll (the daemon's WebSub discovery).
        self.after_poll: list[Callable[[SourceConfig, PollResult], None]] = []

    async def sync(self, keep: set[str] | frozenset[str] = frozenset()) -> dict[str, int]:
        """Register the configured sources in the database (``keep``: others' to leave active)."""
        self.source_ids = await self.store.call(
            self.store.store.sync_sources, source_specs(self.config), keep
        )
        self._options = {s.name: validate_options(s.kind, s.options) for s in self.config.sources}
        return self.source_ids

    async def poll_all(self, sources: list[SourceConfig] | None = None) -> list[PollResult]:
        """Poll ``sources`` (default: every enabled source) concurrently."""
        if not self.source_ids:
            await self.sync()
        chosen = sources if sources is not None else [s for s in self.config.sources if s.enabled]
        return list(await asyncio.gather(*(self.poll(s) for s in chosen)))

    async def poll(self, source: SourceConfig, claim: int | None = None) -> PollResult:
        """Poll one source and record the result; never raises for the source's failures.

        ``claim``: the claim the daemon holds on the source; if it lapsed before the
        result was written, nothing is written and the outcome is ``lease_lost``.
        """
        with structlog.contextvars.bound_contextvars(source=source.name):
            try:
                async with self._in_flight:
                    result = await self._poll(source, claim)
                result.hints = self.hints.get(source.name, result.hints)
                if result.ok and follows(source):
                    await follow_articles(self, source)
            except LeaseLost as exc:
                log.warning("poll.lease_lost", error=str(exc))
                return PollResult(source.name, "lease_lost", error=str(exc))
            except Exception as exc:  # a bug must not stop the other sources
                log.exception("poll.crashed", error=str(exc))
                result = PollResult(source.name, "error", error=f"internal error: {exc!r}")
            _log_result(result)
            for observer in self.after_poll:
                try:
                    observer(source, result)
                except Exception as exc:  # an observer's bug must not fail the poll
                    log.exception("poll.observer_failed", error=str(exc))
            return result

    async def push(
        self, source: SourceConfig, body: bytes, headers: Mapping[str, str]
    ) -> PollResult:
        """Store a body a WebSub hub pushed exactly as a polled one: parse pool, detection,
        store and outbox; never raises for the body's faults.

        Its ``fetches`` row says ``via = 'push'``; the source's validators (ETag,
        Last-Modified) stay those of its last poll. ``headers`` are in lower case. A hub
        may push only what is new (WebSub 7 allows a diff), so a pushed listing removes
        nothing: removals wait for the next poll.
        """
        with structlog.contextvars.bound_contextvars(source=source.name, via="push"):
            try:
                source_id = self.source_ids[source.name]
                state = await self._fetch_state(source_id)
                response = Response(
                    state.url, state.url, 200, dict(headers), body, started_at=now_db()
                )
                record = fetch_record(state.url, response)
                record.via, record.etag = "push", state.etag
                record.last_modified = state.last_modified
                result = await self._read(source, source_id, state, response, record, pushed=True)
            except Exception as exc:  # a bug must not lose the daemon
                log.exception("push.crashed", error=str(exc))
                result = PollResult(source.name, "error", error=f"internal error: {exc!r}")
            _log_result(result)
            return result

    async def _poll(self, source: SourceConfig, claim: int | None = None) -> PollResult:
        source_id = self.source_ids[source.name]
        state = await self._fetch_state(source_id)
        try:
            response = await fetch_source(
                self.fetcher,
                source,
                state.url,
                browser=self.config.browser,
                etag=state.etag,
                last_modified=state.last_modified,
            )
        except FetchError as exc:
            record = error_record(state.url, exc)
            return await self._failed(source, source_id, record, exc, claim=claim)
        record = fetch_record(state.url, response)
        return await self._read(source, source_id, state, response, record, claim)

    async def _read(
        self,
        source: SourceConfig,
        source_id: int,
        state: FetchState,
        response: Response,
        record: FetchRecord,
        claim: int | None = None,
        *,
        pushed: bool = False,
    ) -> PollResult:
        """Parse and store a response (polled or pushed); an unchanged body is only logged.

        ``pushed``: the body may list only some entries, so none is taken as removed; it
        is written in a transaction of its own, not grouped with polls (on PostgreSQL it
        may lock a source another node is polling: alone, it cannot deadlock with them).
        """
        result = PollResult(
            source.name, record.outcome, status=response.status, cache_max_age=response.freshness
        )
        if response.status == 304 or record.body_sha256 == state.body_sha256:
            record.outcome = "not_modified" if response.status == 304 else "same_body"
            record.body_sha256 = None
            await self.store.call(self.store.store.record_unchanged, source_id, record, claim)
            result.outcome = record.outcome
            result.push_links = discover(response.headers, None, response.final_url)
            return result
        try:
            task = parse_task(source, response, self.config.limits, self._options.get(source.name))
            output = await self.parsers.parse(task)
        except ParseError as exc:
            return await self._failed(source, source_id, record, exc, result, claim=claim)
        record.parse_ms = output.parse_ms
        if pushed:
            output = dataclasses.replace(
                output, parsed=dataclasses.replace(output.parsed, complete=False)
            )
        for warning in output.warnings:
            log.warning("parse.warning", warning=warning)
        self.hints[source.name] = output.parsed.hints()
        result.push_links = discover(response.headers, output.parsed, response.final_url)
        if pushed:
            return await self.store.call(
                self._store_alone, source, source_id, output, record, result
            )
        return await self.store.write(self._store, source, source_id, output, record, result, claim)

    async def _failed(
        self,
        source: SourceConfig,
        source_id: int,
        record: FetchRecord,
        exc: FetchError | ParseError,
        result: PollResult | None = None,
        *,
        claim: int | None = None,
    ) -> PollResult:
        """Record a failed poll (fetch or parse) and return its result."""
        record.outcome, record.error, record.body_sha256 = "error", str(exc), None
        await self.store.write(self.store.store.record_fetch, source_id, record, claim)
        status = getattr(exc, "status", None) or record.status
        failed = result or PollResult(source.name, "error")
        failed.outcome, failed.error, failed.status = "error", str(exc), status
        failed.retry_after = getattr(exc, "retry_after", None)
        return failed

    async def _fetch_state(self, source_id: int) -> FetchState:
        """The source's URL and validators, from the store's cache (read once in bulk)."""
        state = self.store.store.fetch_state(source_id)
        if state is None:
            await self.store.call(self.store.store.load_fetch_states)
            state = self.store.store.fetch_state(source_id)
        if state is None:
            raise StoreError(f"no source with id {source_id}")
        return state

    def _store_alone(self, *args: Any) -> PollResult:
        """``_store`` in a transaction of its own; runs on the store's thread."""
        with self.store.store.db.atomic():
            return self._store(*args)

    def _store(
        self,
        source: SourceConfig,
        source_id: int,
        output: ParseOutput,
        record: FetchRecord,
        result: PollResult,
        claim: int | None = None,
    ) -> PollResult:
        """Detect and write; runs on the store's thread."""
        store: Store = self.store.store
        parsed, snapshots = output.parsed, output.snapshots
        store.hold(source_id, claim)  # a push and a poll of one source: one after the other
        changes = detect(
            store.known(source_id),
            snapshots,
            removals=source.removals,
            complete=parsed.complete,
            rekey=source.rekey,
        )
        record.outcome = "changed" if changes else "unchanged"
        store.record_poll(source_id, record, parsed, snapshots, changes, claim)
        result.outcome = record.outcome
        result.counts.update(c.kind for c in changes)
        result.new_dates = tuple(
            c.snapshot.item.published for c in changes if c.kind == "new" and c.snapshot
        )
        return result


def parse_task(
    source: SourceConfig, response: Response, limits: LimitsConfig, options: Any
) -> ParseTask:
    """What a worker needs to read ``response`` as ``source`` would be read."""
    return ParseTask(
        kind=source.kind,
        body=response.body,
        url=response.final_url,
        headers=response.headers,
        options=options,
        ignore=tuple(source.ignore),
        max_entries=limits.max_entries,
        max_field_chars=limits.max_field_chars,
    )


def _log_result(result: PollResult) -> None:
    if result.ok:  # info only when something changed: an unchanged poll is routine
        report = log.info if result.outcome == "changed" else log.debug
        report("poll.done", outcome=result.outcome, status=result.status, **dict(result.counts))
    else:
        log.warning("poll.failed", status=result.status, error=result.error)
