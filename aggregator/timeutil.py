"""Time as the database stores it: UTC text in SQLite's own format.

``YYYY-MM-DD HH:MM:SS.SSS`` compares correctly with SQLite's ``datetime('now', '-1 hour')``,
so users can write time filters without conversions.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_db(moment: datetime) -> str:
    """Format ``moment`` as stored in the database (UTC, millisecond precision)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def now_db() -> str:
    """The current time as stored in the database."""
    return to_db(utcnow())


def from_db(text: str) -> datetime:
    """Parse a database timestamp back into an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def struct_to_db(value: time.struct_time | None) -> str | None:
    """Convert feedparser's ``*_parsed`` (a UTC struct_time) to database text."""
    if value is None:
        return None
    try:
        return to_db(datetime.fromtimestamp(calendar.timegm(value), UTC))
    except (OverflowError, ValueError, OSError):
        return None


def iso_to_db(value: str | None) -> str | None:
    """Convert an ISO 8601 / RFC 3339 string (``Z`` allowed) to database text, or None."""
    if not value or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_db(moment)


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``90s``, ``5m``, ``1h``, ``2d`` or a bare number.

    Raises:
        ValueError: the text is not a duration.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(
                f"invalid duration {text!r}: use a number with s, m, h or d, e.g. 90s, 5m, 1h"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def ago(seconds: float) -> str:
    """A database timestamp ``seconds`` before now."""
    return to_db(utcnow() - timedelta(seconds=seconds))
