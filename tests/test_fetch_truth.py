"""The fetch layer tells the truth: cut-short and empty bodies fail, times are each request's own.

Every case runs against a real server on 127.0.0.1: ``tests/server.py`` for
well-formed HTTP, ``tests/hostile_server.py`` for servers that lie.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from aggregator.config import FetchConfig
from aggregator.errors import FetchError
from aggregator.fetch import Fetcher, Response
from aggregator.store import FetchRecord, SourceSpec, Store
from aggregator.store.schema import migrations
from aggregator.timeutil import from_db
from tests import hostile_server as hs
from tests.conftest import Harness
from tests.server import TestServer

#: Bytes that gzip makes longer, so decoded and encoded sizes differ the "wrong" way.
NOISE = random.Random(7).randbytes(4096)
FEED = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
    + b"".join(
        b"<item><guid>g%d</guid><title>Item %d</title><description>%s</description></item>"
        % (i, i, b"words " * 40)
        for i in range(20)
    )
    + b"</channel></rss>"
)
SLOW = 0.3  # seconds each slow resource takes to answer


@pytest.fixture(name="hostile")
def _hostile() -> Iterator[hs.HostileServer]:
    server = hs.HostileServer().start()
    yield server
    server.stop()


def fetch(url: str, config: FetchConfig | None = None, **validators: str) -> Response:
    """One fetch with a fresh ``Fetcher``."""

    async def run() -> Response:
        async with Fetcher(config or FetchConfig()) as fetcher:
            return await fetcher.fetch(url, **validators)

    return asyncio.run(run())


def fetch_error(url: str) -> FetchError:
    """The ``FetchError`` one fetch of ``url`` raises."""
    with pytest.raises(FetchError) as caught:
        fetch(url)
    return caught.value


def raw(status: int, headers: dict[str, str], body: bytes) -> hs.Handler:
    """Send exactly this head and these body bytes, then close."""

    async def handler(request: hs.RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(hs.head_bytes(status, headers) + body)
        await writer.drain()

    return handler


def chunk_then_close(chunk: bytes) -> hs.Handler:
    """One chunk of a chunked body, then close without the terminating chunk."""

    async def handler(request: hs.RawRequest, writer: asyncio.StreamWriter) -> None:
        head = hs.head_bytes(200, {"Transfer-Encoding": "chunked"})
        writer.write(head + b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()

    return handler


# -- a body shorter than its Content-Length -------------------------------------


def test_identity_body_shorter_than_content_length_fails_with_counts(
    hostile: hs.HostileServer,
) -> None:
    """812 bytes sent of 4096 declared: a failure naming both numbers and the cause."""
    hostile.route("/short", hs.lying_length(4096, FEED[:812]))
    error = fetch_error(hostile.url("/short"))
    assert str(error) == (
        "body cut short: received 812 of the 4096 bytes its Content-Length declares"
        " (the server closed the connection early)"
    )
    assert error.status == 200  # a response arrived: the publisher's fault, not our network


def test_gzip_body_shorter_than_content_length_counts_encoded_bytes(
    hostile: hs.HostileServer,
) -> None:
    """Content-Length counts gzip bytes, so the failure reports gzip bytes, not decoded ones."""
    packed = gzip.compress(FEED)
    sent = packed[: len(packed) // 2]
    hostile.route(
        "/short.gz",
        raw(200, {"Content-Length": str(len(packed)), "Content-Encoding": "gzip"}, sent),
    )
    error = fetch_error(hostile.url("/short.gz"))
    assert f"received {len(sent)} of the {len(packed)} bytes its Content-Length declares" in str(
        error
    )
    assert error.status == 200


def test_complete_gzip_body_is_not_mistaken_for_a_short_one(server: TestServer) -> None:
    """A whole gzip body whose decoded size is smaller than its Content-Length is fine."""
    assert len(gzip.compress(NOISE)) > len(NOISE)  # decoded < declared: counting it would fail
    server.serve("/noise", NOISE, content_type="application/octet-stream", gzip=True)
    response = fetch(server.url("/noise"))
    assert response.headers["content-encoding"] == "gzip"
    assert response.body == NOISE


def test_chunked_body_closed_before_its_end_fails(hostile: hs.HostileServer) -> None:
    """A chunked body without its last chunk is cut short, not a complete document."""
    hostile.route("/chunked", chunk_then_close(FEED[:500]))
    error = fetch_error(hostile.url("/chunked"))
    assert str(error).startswith("body cut short: the server closed the connection after")
    assert "before the end of its chunked body" in str(error)


def test_cut_short_body_is_recorded_as_an_error_not_unchanged(
    harness: Harness, hostile: hs.HostileServer
) -> None:
    """Through the pipeline: the cut body is an error row; no entry is marked removed."""
    harness.sources.append({"name": "victim", "url": hostile.url("/feed")})
    hostile.route("/feed", hs.respond(200, FEED))
    assert harness.poll()[0].outcome == "changed"
    hostile.route("/feed", hs.lying_length(len(FEED), FEED[: len(FEED) // 3]))
    [result] = harness.poll()
    assert result.outcome == "error" and "body cut short" in (result.error or "")
    last = harness.rows("SELECT outcome, status, error FROM fetches ORDER BY id DESC LIMIT 1")[0]
    assert (last["outcome"], last["status"]) == ("error", 200)
    assert last["error"].startswith("body cut short: received ")
    assert harness.rows("SELECT key FROM entries WHERE removed_at IS NOT NULL") == []


# -- empty bodies ----------------------------------------------------------------


def test_empty_200_fails(hostile: hs.HostileServer) -> None:
    hostile.route("/empty", hs.respond(200, b""))
    error = fetch_error(hostile.url("/empty"))
    assert str(error) == "empty response body (HTTP 200 with no content)"
    assert error.status == 200


def test_empty_body_after_decompression_fails(hostile: hs.HostileServer) -> None:
    """Gzip bytes that decode to nothing are still no content."""
    hostile.route("/empty.gz", hs.respond(200, gzip.compress(b""), {"Content-Encoding": "gzip"}))
    assert str(fetch_error(hostile.url("/empty.gz"))).startswith("empty response body")


def test_204_fails(hostile: hs.HostileServer) -> None:
    hostile.route("/nothing", hs.respond(204, b""))
    error = fetch_error(hostile.url("/nothing"))
    assert str(error) == "empty response body (HTTP 204 with no content)"
    assert error.status == 204


def test_304_is_still_a_normal_not_modified_answer(server: TestServer) -> None:
    server.serve("/feed.xml", FEED)
    first = fetch(server.url("/feed.xml"))
    assert first.status == 200 and first.etag
    again = fetch(server.url("/feed.xml"), etag=first.etag)
    assert (again.status, again.body) == (304, b"")


def test_304_declaring_its_representations_length_is_not_cut_short(
    hostile: hs.HostileServer,
) -> None:
    """RFC 9110 lets a 304 carry the Content-Length of the body it does not send."""
    hostile.route("/validated", raw(304, {"Content-Length": "4096", "ETag": '"v1"'}, b""))
    response = fetch(hostile.url("/validated"), etag='"v1"')
    assert (response.status, response.body) == (304, b"")


def test_empty_feed_is_an_error_from_the_first_poll(harness: Harness, server: TestServer) -> None:
    """An empty 200 used to be logged ``same_body`` forever (both body hashes NULL)."""
    server.serve("/empty.xml", b"")
    harness.add("empty", "/empty.xml")
    for _ in range(2):
        [result] = harness.poll()
        assert result.outcome == "error"
    rows = harness.rows("SELECT outcome, status, error FROM fetches ORDER BY id")
    assert [(r["outcome"], r["status"]) for r in rows] == [("error", 200), ("error", 200)]
    assert rows[-1]["error"] == "empty response body (HTTP 200 with no content)"
    [source] = harness.rows("SELECT consecutive_failures, last_error FROM sources")
    assert source["consecutive_failures"] == 2


# -- timing ----------------------------------------------------------------------


def _fetch_all(urls: list[str], config: FetchConfig) -> list[Response | BaseException]:
    async def run() -> list[Response | BaseException]:
        async with Fetcher(config) as fetcher:
            return await asyncio.gather(*(fetcher.fetch(u) for u in urls), return_exceptions=True)

    return asyncio.run(run())


def test_queued_requests_get_their_own_start_and_duration(server: TestServer) -> None:
    """With one slot, three slow fetches run in turn; each reports its own ~300 ms."""
    for name in "abc":
        server.serve(f"/slow-{name}", FEED, delay=SLOW)
    results = _fetch_all([server.url(f"/slow-{n}") for n in "abc"], FetchConfig(concurrency=1))
    responses = [r for r in results if isinstance(r, Response)]
    assert len(responses) == 3, results
    order = sorted(responses, key=lambda r: r.queued_ms)
    starts = [from_db(r.started_at or "") for r in order]
    assert len(set(starts)) == 3 and starts == sorted(starts)
    for earlier, later in itertools.pairwise(starts):
        assert (later - earlier).total_seconds() >= SLOW * 0.9
    own = [r.elapsed_ms for r in order]
    assert all(ms >= SLOW * 1000 * 0.95 for ms in own), own
    # each waited for the ones served before it, not for itself
    assert order[0].queued_ms < SLOW * 1000, order[0].queued_ms
    for k in (1, 2):
        assert order[k].queued_ms >= sum(own[:k]) - 50, (k, own, order[k].queued_ms)
    # the old bug: the last one reported ~900 ms (queueing included); now its own time is
    # less than the time it spent queued behind two others
    assert order[2].elapsed_ms < order[2].queued_ms, (own, order[2].queued_ms)


def test_an_error_carries_its_own_times_too(server: TestServer) -> None:
    """A failure after waiting for a slot reports when it started and how long it waited."""
    server.serve("/slow", FEED, delay=SLOW)
    results = _fetch_all([server.url("/slow"), server.url("/missing")], FetchConfig(concurrency=1))
    ok, error = results
    assert isinstance(ok, Response) and isinstance(error, FetchError), results
    assert error.status == 404
    assert error.started_at is not None and ok.started_at is not None
    assert from_db(error.started_at) > from_db(ok.started_at)
    assert error.queued_ms is not None and error.queued_ms >= ok.elapsed_ms - 50
    assert error.elapsed_ms is not None and error.elapsed_ms < error.queued_ms


# -- the fetches.queued_ms / parse_ms migration -----------------------------------


def test_database_from_before_the_timing_migration_migrates_with_its_rows(tmp_path: Path) -> None:
    """Old rows keep their values with NULL new columns; new rows (batched or not) store both."""
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before=["0006_fetch_timing"])
    columns = {r[1] for r in db.execute("PRAGMA table_info(fetches)")}
    assert "queued_ms" not in columns and "parse_ms" not in columns
    db.execute(
        "INSERT INTO sources (id, name, kind, url, config_url, added_at)"
        " VALUES (1, 'old', 'feed', 'https://x.example/f', 'https://x.example/f', '2020-01-01')"
    )
    db.execute(
        "INSERT INTO fetches (source_id, started_at, url, status, outcome, bytes, duration_ms)"
        " VALUES (1, '2020-01-01 00:00:00.000', 'https://x.example/f', 200, 'unchanged', 10, 42)"
    )
    db.conn.commit()
    db.close()

    store = Store.open(path)
    try:
        [source_id] = store.sync_sources(
            [SourceSpec("old", "feed", "https://x.example/f", 900.0)]
        ).values()
        store.load_fetch_states()
        unchanged = FetchRecord(
            url="https://x.example/f",
            started_at="2020-01-01 12:00:00.000",
            outcome="not_modified",
            status=304,
            duration_ms=3,
            queued_ms=5,
        )
        store.record_unchanged(source_id, unchanged)  # the batched insert
        record = FetchRecord(
            url="https://x.example/f",
            started_at="2020-01-02 00:00:00.000",
            outcome="error",
            error="boom",
            duration_ms=7,
            queued_ms=1234,
            parse_ms=56,
        )
        store.record_fetch(source_id, record)
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT duration_ms, queued_ms, parse_ms FROM fetches ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [(42, None, None), (3, 5, None), (7, 1234, 56)]
