"""Options every command takes, and the one place a command's database is chosen.

``--config``, ``--db`` and ``--log-level`` are declared on every command and group
(``common_options``) and kept in the click context's shared ``meta``, so they may come
before any command (``aggregator --config X poll``) or after any command or subcommand
name (``aggregator outbox list --db H``); the last one given wins. Nothing here imports
more than click at import time: ``aggregator --help`` and tab completion stay fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from aggregator.config import Config

F = TypeVar("F", bound=Callable[..., Any])

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_META = "aggregator.common_options"

#: How a command uses its database: ``read`` never creates one (a missing path is an
#: error), ``write`` creates it if needed, ``new`` must not exist yet (``demo``), ``any``
#: only names it (a command that does not open it).
Mode = Literal["read", "write", "new", "any"]


@dataclass
class CommonOptions:
    """``--config``, ``--db`` and ``--log-level`` as given anywhere on the command line."""

    config: str | None = None
    db: str | None = None
    log_level: str | None = None


def _remember(field: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            setattr(ctx.meta.setdefault(_META, CommonOptions()), field, value)
        return value

    return callback


def common_options(fn: F) -> F:
    """Add ``--config``, ``--db`` and ``--log-level`` to a command or group."""
    fn = click.option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        expose_value=False,
        callback=_remember("log_level"),
        help="Least severe log level printed to stderr (default: INFO; WARNING for checks).",
    )(fn)
    fn = click.option(
        "--db",
        metavar="PATH",
        expose_value=False,
        callback=_remember("db"),
        help="Database to use, overriding the config's [storage] database.",
    )(fn)
    fn = click.option(
        "--config",
        "-c",
        metavar="FILE",
        expose_value=False,
        callback=_remember("config"),
        help="Config file. Default: $AGGREGATOR_CONFIG, ./aggregator.toml,"
        " then ~/.config/aggregator/config.toml.",
    )(fn)
    return fn


def options() -> CommonOptions:
    """The common options given so far on this command line (all ``None`` if none)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return CommonOptions()
    return ctx.meta.get(_META) or CommonOptions()


def configure_logging(default: str = "INFO") -> None:
    """Send logs to stderr at ``--log-level`` (else ``default``)."""
    from aggregator import log

    log.configure(level=options().log_level or default)


def load_config(*, log_level: str = "INFO", mode: Mode | None = "write") -> Config:
    """Configure logging, then find and validate the config (exit 2 on error).

    With a ``mode``, its ``[storage] database`` becomes the one ``database_location``
    chooses (``--db`` first). What the config allows but is probably not meant (an
    interval under a minute) is logged as a ``config.warning``.
    """
    configure_logging(log_level)
    from aggregator import config as config_mod
    from aggregator import log
    from aggregator.errors import AggregatorError

    register_plugins()
    try:
        config = config_mod.load(config_mod.find_config(options().config))
    except AggregatorError as exc:
        fail(str(exc), code=2)
    for warning in config_mod.warnings(config):  # a log line, like the daemon's others
        log.get_logger("aggregator.config").warning("config.warning", problem=warning)
    if mode is None:
        return config
    location = database_location(mode, config=config)
    if location != config.storage.database:
        storage = config.storage.model_copy(update={"database": location})
        config = config.model_copy(update={"storage": storage})
    from aggregator.notify import images

    images.use(config)  # sinks with image = true draw from this database and [images]
    return config


def register_plugins() -> None:
    """Import the plugin registries, which register their kinds' option checks.

    Every config loaded after this has its sources' and sinks' own keys checked too
    (``aggregator.options``); the config package never imports a plugin itself.
    """
    import aggregator.notify
    import aggregator.parse  # noqa: F401


def found_config() -> Config | None:
    """The config if one is found (exit 2 if it is invalid), else ``None``."""
    from aggregator import config as config_mod
    from aggregator.errors import ConfigError

    register_plugins()
    try:
        return config_mod.load(config_mod.find_config(options().config))
    except config_mod.NoConfigFound:
        return None
    except ConfigError as exc:
        fail(str(exc), code=2)


def database_location(
    mode: Mode, *, config: Config | None = None, default: Callable[[], str] | None = None
) -> str:
    """The database a command uses: ``--db``, else ``default()`` or the config's, else the default.

    Every command chooses its database here (``default`` is for a command that does not
    read the config's, like ``demo``). A location containing ``://`` is a URL,
    returned as given with no check of any file. A path is checked for ``mode``: ``read``
    never creates a database (one that does not exist is an error naming the path),
    ``write`` needs a directory it can write in, ``new`` must not exist yet.
    """
    explicit = options().db
    if explicit:
        location, named_by = explicit, "--db"
    elif default is not None:
        location, named_by = default(), ""
    else:
        if config is None:
            config = found_config()
        if config is None:
            from aggregator.config import default_database

            location, named_by = default_database(), "the default database"
        else:
            location, named_by = config.storage.database, f"[storage] database of {config.path}"
    if "://" in location:
        from aggregator.errors import StoreError
        from aggregator.store.db import is_postgres

        try:
            is_postgres(location)
        except StoreError as exc:
            fail(f"{exc}{f' ({named_by})' if named_by else ''}", code=2)
        return location
    path = Path(location).expanduser()
    why = f" ({named_by})" if named_by else ""
    if mode == "read" and not path.is_file():
        what = "is a directory, not a database" if path.is_dir() else "does not exist"
        fail(
            f"no database: {path}{why} {what}. Check the path: a command that reads never"
            " creates a database. To make one, run `aggregator poll` (or `run`) with a"
            " config, or `aggregator demo --db PATH` for a story to explore"
        )
    if mode == "new" and path.exists():
        fail(f"{path}{why} already exists: this command writes a new database (pick another)")
    if mode in ("write", "new"):
        check_writable(path, why)
    return str(path)


def check_writable(path: Path, why: str = "") -> None:
    """Exit 2, saying why, if the database at ``path`` could not be written or created.

    SQLite writes ``-wal`` and ``-shm`` files beside the database, so its directory must
    be writable too (a read-only mount is the usual cause of "unable to open database file").
    """
    directory = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("/"))
    if not directory.is_dir():
        fail(f"cannot use the database {path}{why}: {directory} is not a directory", code=2)
    problem = _read_only_reason(directory)
    if problem is None and path.exists() and not os.access(path, os.W_OK):
        problem = f"{path} itself is read-only"
    if problem is not None:
        fail(
            f"cannot write the database {path}{why}: {problem}. SQLite needs to write the"
            " file and create its -wal and -shm files beside it: choose another --db, or"
            " make the directory writable",
            code=2,
        )


def _read_only_reason(directory: Path) -> str | None:
    """Why ``directory`` cannot be written in, or ``None`` if it can."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"{directory} is on a read-only file system"
    except OSError:
        return None
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory} is not writable by this user"
    return None


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    click.echo(f"aggregator: {message}", err=True)
    sys.exit(code)


def handles_errors(fn: F) -> F:
    """Turn an ``AggregatorError`` into a one-line message and exit status 1 (2 when the
    database cannot be reached: a setting to fix, like a bad config)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from aggregator.errors import AggregatorError, Unreachable

        try:
            return fn(*args, **kwargs)
        except AggregatorError as exc:
            fail(str(exc), code=2 if isinstance(exc, Unreachable) else 1)

    return wrapper  # type: ignore[return-value]


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 delivery``, ``2 deliveries``, ``1 attempt``, ``0 attempts``."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {many or (noun[:-1] + 'ies' if noun.endswith('y') else noun + 's')}"


class LazyChoice(click.Choice):
    """A ``click.Choice`` whose values are computed the first time they are needed.

    The values come from a registry whose import is slow; ``--help`` of another
    command, and tab completion of command names, never pay for it.
    """

    def __init__(self, values: Callable[[], Iterable[str]]) -> None:
        self._values = values
        self._loaded: tuple[str, ...] | None = None
        self.case_sensitive = True

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        """The values, loaded once."""
        if self._loaded is None:
            self._loaded = tuple(self._values())
        return self._loaded

    @choices.setter
    def choices(self, value: Iterable[str]) -> None:
        self._loaded = tuple(value)
