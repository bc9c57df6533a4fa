"""Exceptions raised by aggregator.

The hierarchy::

    AggregatorError
    ├── ConfigError        bad or missing configuration (names file, key, problem)
    ├── FetchError         a source could not be fetched (reason says why)
    │   └── BlockedAddress the URL points at an address we refuse to reach
    ├── ParseError         a response was not something the source's kind can read
    └── StoreError         the database cannot be opened or written
        └── Unreachable    the database server cannot be reached or refuses us

A ``FetchError`` or ``ParseError`` is recorded as that source's failure; the
pass goes on with the other sources.
"""


class AggregatorError(Exception):
    """Base class for every error aggregator raises on purpose."""


class ConfigError(AggregatorError):
    """The configuration is missing or invalid."""


class FetchError(AggregatorError):
    """A source could not be fetched.

    Attributes:
        status: the HTTP status, when a response arrived.
        retry_after: seconds the server asked us to wait, if it said.
        started_at: when the attempt took its concurrency slot (database time text);
            None if it failed before taking one.
        elapsed_ms: the attempt's own time, from taking its slot to the failure.
        queued_ms: time spent waiting for a concurrency slot before the attempt.
    """

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after
        self.started_at: str | None = None
        self.elapsed_ms: int | None = None
        self.queued_ms: int | None = None


class BlockedAddress(FetchError):
    """The URL resolves to an address the network policy refuses."""


class ParseError(AggregatorError):
    """The body could not be read as the source's kind."""


class StoreError(AggregatorError):
    """The database could not be opened or written."""


class Unreachable(StoreError):
    """The database server cannot be reached, or refuses the connection (its URL or password)."""
