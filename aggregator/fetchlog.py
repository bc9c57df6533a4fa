"""The ``fetches`` row of one HTTP attempt, from what the fetcher returned or raised.

Shared by the pipeline (a source's polls) and ``follow`` (its followed articles).
"""

from __future__ import annotations

import hashlib

from aggregator.errors import FetchError
from aggregator.fetch import Response
from aggregator.store import FetchRecord
from aggregator.timeutil import now_db


def fetch_record(url: str, response: Response) -> FetchRecord:
    """The row of a response (outcome ``changed`` until the caller settles it)."""
    return FetchRecord(
        url=url,
        started_at=response.started_at or now_db(),
        queued_ms=response.queued_ms,
        outcome="changed",
        final_url=response.final_url,
        status=response.status,
        bytes=len(response.body),
        duration_ms=response.elapsed_ms,
        etag=response.etag,
        last_modified=response.last_modified,
        body_sha256=hashlib.sha256(response.body).hexdigest() if response.body else None,
        moved_to=response.moved_to,
        error="; ".join(response.notes) or None,  # kept on the row; the poll still succeeded
    )


def error_record(url: str, exc: FetchError) -> FetchRecord:
    """The row of a failed fetch, with the request's own timing if it started."""
    return FetchRecord(
        url=url,
        started_at=exc.started_at or now_db(),
        queued_ms=exc.queued_ms,
        duration_ms=exc.elapsed_ms,
        outcome="error",
        error=str(exc),
        status=exc.status,
    )
