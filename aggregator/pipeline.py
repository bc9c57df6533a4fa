"""One poll of one source: fetch -> parse -> normalize -> detect -> store.

``Pipeline.poll`` never raises for a source's own failure: a transport error,
a bad status or an unreadable body is recorded in ``fetches`` (and the
source's failure count) and returned in the ``PollResult``, and the pass goes
on with the other sources. Parsing, detection and the write run together on
the store's thread, so the event loop stays free for fetches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

from aggregator.config import Config, LimitsConfig, SourceConfig
from aggregator.detect import detect
from aggregator.errors import AggregatorError, FetchError, StoreError
from aggregator.fetch import Fetcher, Response
from aggregator.follow import companion_specs, follow_articles, follows
from aggregator.models import TRACKED_FIELDS, Item, Parsed
from aggregator.normalize import snapshot
from aggregator.parse import get_parser, validate_options, volatile_patterns
from aggregator.parse.feed import ENTRY_CAP
from aggregator.store import FetchRecord, FetchState, SourceSpec, Store
from aggregator.store.thread import StoreThread
from aggregator.timeutil import now_db

log = structlog.get_logger("aggregator.pipeline")


@dataclass(slots=True)
class PollResult:
    """What one poll did, for the scheduler and the CLI."""

    source: str
    outcome: str
    counts: Counter[str] = field(default_factory=Counter)
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    ttl_seconds: int | None = None
    skip_hours: frozenset[int] = frozenset()
    cache_max_age: float | None = None

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

    def __init__(self, config: Config, store: StoreThread, fetcher: Fetcher) -> None:
        self.config = config
        self.store = store
        self.fetcher = fetcher
        self.source_ids: dict[str, int] = {}
        self._options: dict[str, Any] = {}
        #: The publisher's last ``<ttl>`` and ``<skipHours>`` per source, so they still
        #: apply after polls that parse nothing (304, identical body).
        self.hints: dict[str, tuple[int | None, frozenset[int]]] = {}

    async def sync(self) -> dict[str, int]:
        """Register the configured sources in the database."""
        self.source_ids = await self.store.call(
            self.store.store.sync_sources, source_specs(self.config)
        )
        self._options = {s.name: validate_options(s.kind, s.options) for s in self.config.sources}
        return self.source_ids

    async def poll_all(self, sources: list[SourceConfig] | None = None) -> list[PollResult]:
        """Poll ``sources`` (default: every enabled source) concurrently."""
        if not self.source_ids:
            await self.sync()
        chosen = sources if sources is not None else [s for s in self.config.sources if s.enabled]
        return list(await asyncio.gather(*(self.poll(s) for s in chosen)))

    async def poll(self, source: SourceConfig) -> PollResult:
        """Poll one source and record the result; never raises for the source's failures."""
        with structlog.contextvars.bound_contextvars(source=source.name):
            try:
                result = await self._poll(source)
                result.ttl_seconds, result.skip_hours = self.hints.get(
                    source.name, (None, frozenset())
                )
                if result.ok and follows(source):
                    await follow_articles(self, source)
            except Exception as exc:  # a bug must not stop the other sources
                log.exception("poll.crashed", error=str(exc))
                result = PollResult(source.name, "error", error=f"internal error: {exc!r}")
            _log_result(result)
            return result

    async def _poll(self, source: SourceConfig) -> PollResult:
        source_id = self.source_ids[source.name]
        state = await self._fetch_state(source_id)
        started = now_db()
        try:
            response = await self.fetcher.fetch(
                state.url, etag=state.etag, last_modified=state.last_modified
            )
        except FetchError as exc:
            record = FetchRecord(
                url=state.url,
                started_at=started,
                outcome="error",
                error=str(exc),
                status=exc.status,
            )
            await self.store.call(self.store.store.record_fetch, source_id, record)
            return PollResult(
                source.name, "error", status=exc.status, error=str(exc), retry_after=exc.retry_after
            )
        record = _record(state.url, started, response)
        result = PollResult(
            source.name, record.outcome, status=response.status, cache_max_age=response.freshness
        )
        if response.status == 304 or record.body_sha256 == state.body_sha256:
            record.outcome = "not_modified" if response.status == 304 else "same_body"
            record.body_sha256 = None
            await self.store.call(self.store.store.record_unchanged, source_id, record)
            result.outcome = record.outcome
            return result
        return await self.store.call(self._process, source, source_id, response, record, result)

    async def _fetch_state(self, source_id: int) -> FetchState:
        """The source's URL and validators, from the store's cache (read once in bulk)."""
        state = self.store.store.fetch_state(source_id)
        if state is None:
            await self.store.call(self.store.store.load_fetch_states)
            state = self.store.store.fetch_state(source_id)
        if state is None:
            raise StoreError(f"no source with id {source_id}")
        return state

    def _process(
        self,
        source: SourceConfig,
        source_id: int,
        response: Response,
        record: FetchRecord,
        result: PollResult,
    ) -> PollResult:
        """Parse, detect and store; runs on the store's thread."""
        store: Store = self.store.store
        cap = ENTRY_CAP.set(self.config.limits.max_entries)
        try:
            parsed = get_parser(source.kind).parse(
                response.body,
                url=response.final_url,
                headers=response.headers,
                options=self._options.get(source.name),
            )
        except AggregatorError as exc:
            record.outcome, record.error, record.body_sha256 = "error", str(exc), None
            store.record_fetch(source_id, record)
            result.outcome, result.error = "error", str(exc)
            return result
        finally:
            ENTRY_CAP.reset(cap)
        parsed = apply_limits(parsed, self.config.limits)
        for warning in parsed.warnings:
            log.warning("parse.warning", warning=warning)
        ignore = [*volatile_patterns(source.kind), *source.ignore_patterns]
        snapshots = [snapshot(item, ignore) for item in parsed.items]
        changes = detect(
            store.known(source_id), snapshots, removals=source.removals, complete=parsed.complete
        )
        record.outcome = "changed" if changes else "unchanged"
        store.record_poll(source_id, record, parsed, snapshots, changes)
        result.outcome = record.outcome
        result.counts.update(c.kind for c in changes)
        self.hints[source.name] = (parsed.ttl_seconds, parsed.skip_hours)
        return result


def apply_limits(parsed: Parsed, limits: LimitsConfig) -> Parsed:
    """Cut the item list and over-long fields to the configured limits."""
    items, complete, warnings = parsed.items, parsed.complete, list(parsed.warnings)
    if len(items) > limits.max_entries:
        warnings.append(f"{len(items)} entries, keeping the first {limits.max_entries}")
        items, complete = items[: limits.max_entries], False
    cap = limits.max_field_chars
    if any(len(getattr(i, f)) > cap for i in items for f in TRACKED_FIELDS):
        items = [_cut_fields(i, cap) for i in items]
        warnings.append(f"fields longer than {cap} characters were cut")
    return dataclasses.replace(parsed, items=items, complete=complete, warnings=warnings)


def _cut_fields(item: Item, cap: int) -> Item:
    cut = {f: getattr(item, f)[:cap] for f in TRACKED_FIELDS if len(getattr(item, f)) > cap}
    return dataclasses.replace(item, **cut) if cut else item


def _record(url: str, started: str, response: Response) -> FetchRecord:
    return FetchRecord(
        url=url,
        started_at=started,
        outcome="changed",
        final_url=response.final_url,
        status=response.status,
        bytes=len(response.body),
        duration_ms=response.elapsed_ms,
        etag=response.etag,
        last_modified=response.last_modified,
        body_sha256=hashlib.sha256(response.body).hexdigest() if response.body else None,
        moved_to=response.moved_to,
    )


def _log_result(result: PollResult) -> None:
    if result.ok:
        log.info("poll.done", outcome=result.outcome, status=result.status, **dict(result.counts))
    else:
        log.warning("poll.failed", status=result.status, error=result.error)
