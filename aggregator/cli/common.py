"""Options and helpers shared by commands."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from aggregator import config as config_mod
from aggregator import log, notify, parse
from aggregator.config import Config
from aggregator.errors import AggregatorError, ConfigError
from aggregator.notify import images

F = TypeVar("F", bound=Callable[..., Any])

#: The plugin registries: importing them registers their kinds' option checks
#: (``aggregator.options``), so every config loaded here has its sources' and sinks'
#: own keys checked too.
PLUGIN_REGISTRIES = (parse, notify)


def log_level_option(default: str) -> Callable[[F], F]:
    """``--log-level`` with ``default``."""
    return click.option(
        "--log-level",
        default=default,
        show_default=True,
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        help="Least severe log level printed (logs go to stderr).",
    )


def config_options(fn: F) -> F:
    """``--config``, ``--db`` and logging options."""
    fn = log_level_option("INFO")(fn)
    fn = click.option(
        "--db",
        "database",
        metavar="PATH",
        help="SQLite database to use (overrides [storage] database).",
    )(fn)
    fn = click.option(
        "--config",
        "-c",
        "config_path",
        metavar="FILE",
        help="Config file. Default: $AGGREGATOR_CONFIG, ./aggregator.toml,"
        " then ~/.config/aggregator/config.toml.",
    )(fn)
    return fn


def load_config(config_path: str | None, database: str | None, log_level: str) -> Config:
    """Configure logging, then find and validate the config (exit 2 on error)."""
    log.configure(level=log_level)
    try:
        config = config_mod.load(config_mod.find_config(config_path))
    except AggregatorError as exc:
        fail(str(exc), code=2)
    if database:
        config = config.model_copy(
            update={"storage": config.storage.model_copy(update={"database": database})}
        )
    images.use(config)  # sinks with image = true draw from this database and [images]
    return config


def fail(message: str, *, code: int = 1) -> None:
    """Print ``message`` to stderr and exit with ``code``."""
    click.echo(f"aggregator: {message}", err=True)
    sys.exit(code)


def handles_errors(fn: F) -> F:
    """Turn an ``AggregatorError`` into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AggregatorError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def reader_options(fn: F) -> F:
    """``--db`` and ``--config``: which database to read."""
    fn = click.option("--db", "database", metavar="PATH", help="SQLite database to read.")(fn)
    return click.option(
        "--config", "-c", "config_path", metavar="FILE", help="Config file naming the database."
    )(fn)


def database_path(config_path: str | None, database: str | None) -> str:
    """``--db``, else the found config's database, else the default database."""
    if database:
        return database
    try:
        return config_mod.load(config_mod.find_config(config_path)).storage.database
    except config_mod.NoConfigFound:
        return config_mod.default_database()
    except ConfigError as exc:
        fail(str(exc), code=2)
        raise  # unreachable: fail() exits
