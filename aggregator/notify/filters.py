"""Per-sink filters: which events a sink gets, and when (quiet hours, batching).

Content filters (``keywords`` and ``regex`` search the titles before and
after, the diff and the excerpt; ``headline_only``; ``min_words``) look at
change events only; ``source.*`` and ``digest`` events pass them.
``sources`` and ``kinds`` apply to every event (``kinds`` names change kinds
``new``/``changed``/``removed``/``restored``/``moved`` or event types
``source.failing``/``source.recovered``/``digest``). A ``moved`` change (a
story listed under a new key) is a kind of ``changed``: ``kinds`` naming
``changed`` lets it through, and ``min_words`` applies to it. A digest that names its
sink (``[[digests]] sink``) goes to that sink only, whatever its filters.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aggregator.config import SinkConfig


class Filter:
    """A sink's filters, compiled once."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.keywords = [k.casefold() for k in config.keywords]
        self.regex = re.compile(config.regex, re.IGNORECASE) if config.regex else None
        self.zone = ZoneInfo(config.timezone)
        self.quiet: tuple[time, time] | None = None
        if config.quiet_hours:
            start, end = config.quiet_hours.split("-")
            self.quiet = (time.fromisoformat(start), time.fromisoformat(end))

    def accepts(self, event: dict[str, Any]) -> bool:
        """Whether the sink wants ``event`` at all."""
        if event.get("type") == "digest" and event.get("sink"):
            return event["sink"] == self.config.name  # a scheduled digest names its sink
        source = event.get("source") or {}
        if self.config.sources and source.get("name") not in self.config.sources:
            return False
        kind = event.get("kind") if event.get("type") == "change" else event.get("type")
        wanted = self.config.kinds
        if wanted and kind not in wanted and not (kind == "moved" and "changed" in wanted):
            return False
        return event.get("type") != "change" or self._content(event)

    def _content(self, event: dict[str, Any]) -> bool:
        fields = event.get("fields") or []
        if self.config.headline_only and event.get("kind") != "new" and "title" not in fields:
            return False
        if (
            self.config.min_words
            and event.get("kind") in ("changed", "moved")
            and event.get("words_changed", 0) < self.config.min_words
        ):
            return False
        if not (self.keywords or self.regex):
            return True
        title = event.get("title") or {}
        parts = [title.get("before"), title.get("after"), event.get("diff"), event.get("excerpt")]
        haystack = "\n".join(str(part) for part in parts if part)
        if self.keywords and not any(k in haystack.casefold() for k in self.keywords):
            return False
        return not (self.regex and not self.regex.search(haystack))

    def batch_key(self, event: dict[str, Any]) -> str | None:
        """The story an event folds into when the sink batches (``None``: never folded)."""
        if not self.config.batch or event.get("type") != "change":
            return None
        return f"{event['source']['name']}:{event['entry']['id']}"

    def due(self, created: datetime) -> datetime:
        """When an event created at ``created`` (aware) may be sent: after batching/quiet hours."""
        due = created + timedelta(seconds=self.config.batch or 0)
        return self.after_quiet(due)

    def after_quiet(self, moment: datetime) -> datetime:
        """``moment``, or the end of the quiet hours it falls in."""
        if self.quiet is None:
            return moment
        start, end = self.quiet
        local = moment.astimezone(self.zone)
        now = local.time()
        inside = start <= now < end if start <= end else (now >= start or now < end)
        if not inside:
            return moment
        day = local.date() if now < end else local.date() + timedelta(days=1)
        return datetime.combine(day, end, tzinfo=self.zone).astimezone(moment.tzinfo)
