"""Logging through structlog: JSON lines off a terminal, readable lines on one.

The readable lines are coloured unless ``$NO_COLOR`` is set.

Bind the source name with ``structlog.contextvars.bound_contextvars(source=...)``
and every line logged inside, ours or a library's, carries it.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ExtraAdder(),
]


def configure(*, level: str = "INFO", json: bool | None = None) -> None:
    """Send every log line to stderr, as JSON unless stderr is a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,
    )
    renderer: list[structlog.types.Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(colors=use_color())]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler", "trafilatura"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def use_color() -> bool:
    """Colour the readable lines on a terminal, unless ``$NO_COLOR`` is set (no-color.org)."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger named ``name``."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]
