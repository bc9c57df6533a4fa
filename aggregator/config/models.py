"""The configuration's tables as frozen pydantic models (validated once, at load).

``aggregator.config`` reads the file and re-exports these.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aggregator.chromium.process import ChromiumSettings, find_executable, missing_message
from aggregator.detect import REKEY_POLICIES, REMOVAL_POLICIES
from aggregator.errors import ConfigError
from aggregator.timeutil import interval_setting, setting_duration

#: A duration setting: ``90s``, ``5m``, ``1h``, ``2d``; a bare number is refused.
Duration = Annotated[float, BeforeValidator(setting_duration)]
#: A polling interval: a ``Duration`` of at most a year.
Interval = Annotated[float, BeforeValidator(interval_setting)]

_QUIET = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")

#: An HTTP header name (RFC 9110 token), and headers a source may not set itself.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "if-none-match"}
    | {"if-modified-since", "accept-encoding"}
)

EVENT_KINDS = (
    "new", "changed", "removed", "restored", "moved", "source.failing", "source.recovered",
    "digest",
)  # fmt: skip

#: How a source's page is got, and the kinds a browser may render.
FETCH_MODES = ("http", "browser")
BROWSER_KINDS = ("liveblog", "page")
#: A source's ``push`` setting: subscribe to the publisher's WebSub hub, or never.
PUSH_MODES = ("auto", "off")

DEFAULT_USER_AGENT = (
    "aggregator/{version} (+https://github.com/aggregator-news/aggregator; news change tracker)"
)


def check_regex(pattern: str, label: str = "") -> str:
    """``pattern`` if it compiles; ``ValueError`` saying why not."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{label}{pattern!r} is not a valid regex: {exc}") from None
    return pattern


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    """``[storage]``: where the history lives."""

    #: A file path (SQLite, the default) or a ``postgresql://`` URL (several nodes). The
    #: password comes from the URL, ``PGPASSWORD``, ``~/.pgpass`` or libpq's ``passfile=``.
    database: str = Field(default_factory=lambda: default_database())
    keep_fetches: Duration = 90 * 86400.0
    #: Delivered events' payloads, deliveries and attempts older than this are pruned
    #: (an event a sink has not delivered yet is never pruned).
    keep_events: Duration = 3 * 86400.0

    @field_validator("database")
    @classmethod
    def _location(cls, value: str) -> str:
        if "://" in value:
            scheme = value.split("://", 1)[0].lower()
            if scheme not in ("postgresql", "postgres"):
                raise ValueError(
                    f"unsupported URL scheme {scheme + '://'!r}: use a file path (SQLite)"
                    " or a postgresql:// URL"
                )
        return value


class FetchConfig(_Strict):
    """``[fetch]``: how politely and how safely we fetch."""

    user_agent: str = DEFAULT_USER_AGENT
    timeout: Duration = 30.0
    connect_timeout: Duration = 10.0
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_redirects: int = Field(default=5, ge=0, le=20)
    concurrency: int = Field(default=8, ge=1, le=256)
    per_host: int = Field(default=2, ge=1, le=64)
    allow_private: bool = False


class LimitsConfig(_Strict):
    """``[limits]``: bounds on what one response may make us store."""

    max_entries: int = Field(default=5000, gt=0)
    max_field_chars: int = Field(default=1_000_000, gt=0)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Bytes in a size such as ``192MiB``, ``1G``, ``512KB`` or a bare number of bytes.

    Units are binary (``M`` = ``MB`` = ``MiB`` = 2**20): memory is counted in pages.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"invalid size {value!r}: use bytes or a number with K, M or G")
    unit = (match.group(2) or "")[:1].upper()
    return int(float(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit])


Size = Annotated[int, BeforeValidator(parse_size)]


class ParseConfig(_Strict):
    """``[parse]``: the worker processes that read untrusted response bodies."""

    #: Worker processes parsing in parallel (one per core is the most that helps).
    workers: int = Field(default=2, ge=1, le=64)
    #: Address-space cap of each worker (RLIMIT_AS); a parse past it fails that source.
    memory_limit: Size = Field(default=192 * 2**20, ge=64 * 2**20)
    #: Longest one parse may take; past it the worker is killed and replaced.
    time_limit: Duration = 20.0
    #: Parses a worker runs before it is replaced (returns fragmented memory).
    tasks_per_worker: int = Field(default=500, ge=1)


class BrowserConfig(_Strict):
    """``[browser]``: the headless Chromium of ``fetch = "browser"`` sources and diff images.

    Started only when a source or sink needs it (see docs/browser.md).
    """

    #: The Chromium binary: a path or a name on ``$PATH`` ("" = chromium, then the usual names).
    executable: str = ""
    #: Pages rendered at once (each its own renderer process).
    pages: int = Field(default=1, ge=1, le=8)
    #: Longest a page may take to load and settle (network idle, or ``wait_for``).
    timeout: Duration = Field(default=30.0, gt=0)
    #: Budget for Chromium's whole process tree (PSS); past it the largest page is stopped.
    memory_limit: Size = Field(default=384 * 2**20, ge=128 * 2**20)
    #: Bytes one page may load from the network in all (document, scripts, data).
    max_transfer: Size = Field(default=32 * 2**20, gt=0)
    #: Chromium is stopped after this long with no page open (started again when needed).
    idle_close: Duration = Field(default=120.0, ge=0)

    def settings(self) -> ChromiumSettings:
        """How to run Chromium.

        Raises:
            ConfigError: no Chromium is installed (or not at ``executable``).
        """
        found = find_executable(self.executable)
        if found is None:
            raise ConfigError(missing_message(self.executable))
        return ChromiumSettings(
            executable=found,
            pages=self.pages,
            memory_limit=self.memory_limit,
            idle_close=self.idle_close,
        )


class ImagesConfig(_Strict):
    """``[images]``: diff pictures (``aggregator diff --image``, sinks' ``image``, the web view)."""

    #: Where rendered pictures are kept ("" = ``<database name>-images`` beside the database).
    cache: str = ""
    #: Oldest pictures are deleted past this total.
    cache_max: Size = Field(default=256 * 2**20, ge=0)
    width: int = Field(default=1200, ge=400, le=2400)
    #: Tallest picture; longer diffs are cut, keeping the changed parts.
    max_height: int = Field(default=2000, ge=300, le=8000)


class ScheduleConfig(_Strict):
    """``[schedule]``: how the daemon spaces polls and backs off (docs/service.md)."""

    max_backoff: Duration = 86400.0
    startup_spread: Duration = 300.0
    network_retry: Duration = 60.0
    shutdown_grace: Duration = 20.0
    #: How long a node holds a source it claimed before another node may take it over
    #: (default: the fetch timeout plus the parse time limit plus a minute).
    lease: Duration | None = None
    #: How sources with ``adaptive = true`` are scheduled: ``learned`` (each source's
    #: own rhythm, within a budget of requests; docs/rhythm.md) or ``adaptive``
    #: (halve the interval after a change, lengthen it after a quiet poll).
    policy: str = "learned"
    #: The ``learned`` budget in requests per day over all its sources; 0: each
    #: source's ``interval`` read as its average.
    requests_per_day: float = Field(default=0.0, ge=0)

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value not in ("learned", "adaptive"):
            raise ValueError(f"must be learned or adaptive, got {value!r}")
        return value


class SourceConfig(BaseModel):
    """One ``[[sources]]`` table. Kind-specific keys go to ``options``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    url: str
    name: str = ""
    kind: str = "feed"
    interval: Interval = 900.0
    removals: str = "window"
    #: ``auto``: a story listed under a new key (fixed slug, new guid) stays one entry.
    rekey: str = "auto"
    ignore: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    adaptive: bool = True
    min_interval: Interval | None = None
    max_interval: Interval | None = None
    #: Extra request headers (a token, a cookie), ``_env`` keys already read from the
    #: environment. Secret: shown as ``**********``; use ``request_headers`` to send.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    #: ``http`` (a plain GET), or ``browser``: load the page in headless Chromium and read
    #: the HTML its scripts built (live blogs and pages only; see docs/browser.md).
    fetch: str = "http"
    #: With ``fetch = "browser"``: a CSS selector; the page is read once it matches
    #: (default: once the network has been idle for half a second).
    wait_for: str = ""
    #: WebSub push: ``auto`` subscribes where the publisher offers a hub, ``off`` never.
    push: str = "auto"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value.strip()

    @field_validator("removals", "rekey", "push")
    @classmethod
    def _policy(cls, value: str, info: ValidationInfo) -> str:
        choices = {"removals": REMOVAL_POLICIES, "rekey": REKEY_POLICIES, "push": PUSH_MODES}[
            info.field_name
        ]
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    @field_validator("fetch")
    @classmethod
    def _fetch(cls, value: str) -> str:
        if value not in FETCH_MODES:
            raise ValueError(f"must be one of {', '.join(FETCH_MODES)}, got {value!r}")
        return value

    @field_validator("ignore")
    @classmethod
    def _ignore(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            check_regex(pattern, f"pattern {i} ")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        return resolve_headers(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _name(self) -> SourceConfig:
        if not self.name:
            object.__setattr__(self, "name", name_from_url(self.url))
        if self.min_interval is not None and self.min_interval > self.interval:
            raise ValueError(
                f"min_interval ({self.min_interval:g}s) is longer than"
                f" interval ({self.interval:g}s)"
            )
        if self.max_interval is not None and self.max_interval < self.interval:
            raise ValueError(
                f"max_interval ({self.max_interval:g}s) is shorter than"
                f" interval ({self.interval:g}s)"
            )
        if self.fetch == "browser" and self.kind not in BROWSER_KINDS:
            raise ValueError(
                f'fetch = "browser" is for {" and ".join(BROWSER_KINDS)} sources, not'
                f" kind {self.kind!r} (a feed is data, not a page to render)"
            )
        if self.wait_for and self.fetch != "browser":
            raise ValueError('wait_for applies only with fetch = "browser"')
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The kind-specific keys, as written."""
        return dict(self.model_extra or {})

    @property
    def ignore_patterns(self) -> list[re.Pattern[str]]:
        """``ignore`` compiled."""
        return [re.compile(p) for p in self.ignore]

    @property
    def request_headers(self) -> dict[str, str]:
        """The ``headers`` to send with each request of this source, in clear."""
        return {name: value.get_secret_value() for name, value in self.headers.items()}


def resolve_headers(written: dict[Any, Any]) -> dict[str, str]:
    """A source's ``headers`` as sent: a key ending ``_env`` names an environment variable.

    ``Cookie_env = "FEED_COOKIE"`` sends ``Cookie:`` with the value of ``$FEED_COOKIE``.
    Errors name the header or the variable, never a value.
    """
    out: dict[str, str] = {}
    for key, value in written.items():
        name = str(key).removesuffix("_env")
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{key!r} is not a valid HTTP header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by aggregator itself and cannot be configured")
        if name.lower() in {n.lower() for n in out}:
            raise ValueError(f"header {name!r} is given twice (as {name} and {name}_env?)")
        if not isinstance(value, str):
            raise ValueError(f"{key}: must be a string")
        if str(key).endswith("_env"):
            if value not in os.environ:
                raise ValueError(
                    f"{key}: environment variable {value} is not set (it holds the {name} header)"
                )
            value = os.environ[value]
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"{key}: a header value cannot contain a line break")
        out[name] = value
    return out


class NotifyConfig(_Strict):
    """``[notify]``: delivery of events to sinks."""

    failing_after: int = Field(default=3, ge=1)
    retry_base: Duration = 2.0
    retry_max: Duration = 3600.0
    check_every: Duration = 5.0
    deliver_on_poll: bool = True
    #: Delivery processes ``aggregator run`` starts beside itself (they share the work
    #: as nodes do); 0: the daemon delivers in its own process.
    processes: int = Field(default=1, ge=0, le=16)


class SinkConfig(BaseModel):
    """One ``[[sinks]]`` table: filters here, kind-specific keys go to ``options``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str
    name: str = ""
    enabled: bool = True
    sources: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    regex: str = ""
    headline_only: bool = False
    min_words: int = Field(default=0, ge=0)
    quiet_hours: str = ""
    timezone: str = "UTC"
    batch: Duration | None = None
    #: Deliveries in flight at once, over all nodes (default: the sink kind's own).
    concurrency: int | None = Field(default=None, ge=1, le=64)
    #: Also send the events of a source's first listing (its baseline), which are
    #: otherwise stored but not sent.
    send_first_listing: bool = False

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind not in EVENT_KINDS:
                raise ValueError(f"unknown kind {kind!r} (known: {', '.join(EVENT_KINDS)})")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        return check_regex(value)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        if value and not _QUIET.match(value):
            raise ValueError(f"use HH:MM-HH:MM, e.g. 22:00-07:00, got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use e.g. UTC, Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _name(self) -> SinkConfig:
        if not self.name:
            object.__setattr__(self, "name", self.kind)
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The kind-specific keys, as written."""
        return dict(self.model_extra or {})


class DigestConfig(_Strict):
    """One ``[[digests]]`` table: a digest sent through a sink on a cron schedule."""

    sink: str
    schedule: str = "0 7 * * *"
    since: Duration = 86400.0
    format: str = "markdown"
    sources: list[str] = Field(default_factory=list)
    title: str = "aggregator digest"
    name: str = ""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(
                f"invalid cron schedule {value!r}: {exc} (five fields: minute hour day month"
                ' weekday, e.g. "0 7 * * *")'
            ) from None
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("text", "markdown"):
            raise ValueError(f"must be text or markdown, got {value!r} (HTML is always included)")
        return value


class ServeConfig(_Strict):
    """``[serve]``: the read-only web view (``aggregator serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Required to bind anywhere but loopback (unless ``behind_proxy``). Sent as
    #: ``Authorization: Bearer ...`` or once as ``?token=...`` (which sets a cookie).
    token: SecretStr | None = None
    #: An environment variable holding the token instead (read by ``serve`` when it starts).
    token_env: str | None = None
    #: A reverse proxy in front authenticates and forwards (``X-Forwarded-*`` trusted
    #: from ``forwarded_allow_ips``): a non-loopback bind is then allowed without a token.
    behind_proxy: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    #: The path the proxy serves the app under, e.g. ``/news`` (no trailing slash).
    root_path: str = ""
    #: Seconds between the live view's checks for new changes (one query for all clients).
    live_interval: Duration = Field(default=1.0, gt=0)

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError(f"must start with / (e.g. /news), got {value!r}")
        return value

    @model_validator(mode="after")
    def _token(self) -> ServeConfig:
        if self.token_env and self.token is not None:
            raise ValueError("give token or token_env, not both")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("token: use at least 16 characters (e.g. `openssl rand -hex 16`)")
        return self

    def resolved_token(self) -> str | None:
        """The token in clear: ``token``, else ``$token_env`` (read only by ``serve``, so the
        daemon sharing this config needs no such variable).

        Raises:
            ValueError: ``token_env`` names a variable that is not set, or a short token.
        """
        if self.token is not None:
            return self.token.get_secret_value()
        if not self.token_env:
            return None
        value = os.environ.get(self.token_env, "")
        if len(value) < 16:
            state = "is not set" if not value else "holds fewer than 16 characters"
            raise ValueError(f"[serve] token_env: environment variable {self.token_env} {state}")
        return value


class WebSubConfig(_Strict):
    """``[websub]``: push from publishers' WebSub hubs (docs/websub.md)."""

    #: The public base URL a hub reaches the daemon's callback at (behind a reverse
    #: proxy); each subscription adds an unguessable path to it. Unset: push is off.
    callback: str | None = None
    #: Where the daemon's callback endpoint listens (``host:port``; loopback by default).
    listen: str = "127.0.0.1:8081"
    #: How often a source with a live subscription is still polled, to catch what a hub missed.
    safety_poll: Duration = 3600.0
    #: The lease asked of hubs (the hub decides; renewed before it ends).
    lease: Duration = 7 * 86400.0
    #: A subscription request the hub has not verified by then counts as refused.
    verify_timeout: Duration = 300.0
    #: The first wait before asking a hub again after a refusal (doubles, up to a day).
    retry: Duration = 3600.0

    @field_validator("callback")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"give a base URL without ?query or #fragment, got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.strip().rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"use host:port, e.g. 127.0.0.1:8081, got {value!r}")
        return value.strip()

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port), brackets of an IPv6 host removed."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class Config(_Strict):
    """The whole configuration file."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    parse: ParseConfig = Field(default_factory=ParseConfig)
    browser: BrowserConfig = Field(default_factory=BrowserConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    include: list[str] = Field(default_factory=list)
    defaults: dict[str, Any] = Field(default_factory=dict)
    sources: list[SourceConfig] = Field(default_factory=list)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    sinks: list[SinkConfig] = Field(default_factory=list)
    digests: list[DigestConfig] = Field(default_factory=list)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    websub: WebSubConfig = Field(default_factory=WebSubConfig)
    path: str = ""  # where it was read from (set by load)

    def source(self, name: str) -> SourceConfig:
        """The source called ``name``."""
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)


def default_database() -> str:
    """``$AGGREGATOR_DATABASE`` (or ``$AGGREGATOR_DB``), else ``$STATE_DIRECTORY/aggregator.db``,
    else ``./aggregator.db``."""
    if env := os.environ.get("AGGREGATOR_DATABASE") or os.environ.get("AGGREGATOR_DB"):
        return env
    if state := os.environ.get("STATE_DIRECTORY"):
        return str(Path(state.split(":")[0]) / "aggregator.db")
    return "aggregator.db"


def name_from_url(url: str) -> str:
    """A readable default name: host, port if any, and path: ``example.com/news/feed.xml``.

    An explicit port is kept (``localhost:8080/feed``), so two feeds on one host that
    differ only by port get different names.
    """
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: the URL check reports it
        port = ""
    return f"{parts.hostname}{port}{parts.path.rstrip('/')}" if parts.hostname else url
