"""Time as the database stores it: UTC text in SQLite's own format.

``YYYY-MM-DD HH:MM:SS.SSS`` compares correctly with SQLite's ``datetime('now', '-1 hour')``,
so users can write time filters without conversions.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationInfo

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DAY = 86400.0
#: The longest duration a setting takes; longer is a typo (``500000d``).
MAX_DURATION = 3650 * DAY
#: The longest polling interval a source takes.
MAX_INTERVAL = 365 * DAY
#: Validation context key: the values come from a config file, where a bare number is
#: ambiguous (seconds? minutes?) and therefore refused.
FROM_FILE = "from_file"


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
    """Seconds in a duration written with its unit: ``90s``, ``5m``, ``1h``, ``2d``.

    A Python number is taken as seconds; text needs a unit, so ``"5"`` (seconds or
    minutes?) is refused with the hint of what to write.

    Raises:
        ValueError: the text is not a duration, or has no unit.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(
                f"invalid duration {text!r}: use a number with s, m, h or d, e.g. 90s, 5m, 1h"
            )
        if match.group(2) is None:
            raise ValueError(_unit_hint(match.group(1)))
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def _unit_hint(number: Any) -> str:
    n = f"{number:g}" if isinstance(number, float) else str(number)
    return (
        f'duration {n!r} has no unit: write "{n}s" for seconds or "{n}m" for minutes'
        " (h: hours, d: days)"
    )


def setting_duration(value: Any, info: ValidationInfo) -> float:
    """A duration setting (pydantic validator): ``parse_duration`` with the config's rules.

    From a config file (validation context ``FROM_FILE``) a bare number is refused
    too, and anything longer than ``MAX_DURATION`` is refused as a typo.
    """
    return _checked(value, info, MAX_DURATION)


def interval_setting(value: Any, info: ValidationInfo) -> float:
    """A polling interval setting: as ``setting_duration``, at most ``MAX_INTERVAL``."""
    return _checked(value, info, MAX_INTERVAL)


def _checked(value: Any, info: ValidationInfo | None, limit: float) -> float:
    from_file = bool(info is not None and info.context and info.context.get(FROM_FILE))
    if from_file and isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(_unit_hint(value))
    seconds = parse_duration(value)
    if seconds > limit:
        raise ValueError(
            f"{value!r} is longer than {limit / DAY:g} days: a typo? (units: s, m, h, d)"
        )
    return seconds


def ago(seconds: float) -> str:
    """A database timestamp ``seconds`` before now."""
    return to_db(utcnow() - timedelta(seconds=seconds))
