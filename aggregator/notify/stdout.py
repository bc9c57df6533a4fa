"""``stdout``: one readable line per event (a digest prints its title and text)."""

from __future__ import annotations

import sys
from typing import Any

from aggregator.notify import render
from aggregator.notify.base import DeliveryError, Options, Sink


class StdoutOptions(Options):
    """No options of its own."""


class StdoutSink(Sink):
    """Prints events to standard output."""

    kind = "stdout"
    concurrency = 1
    in_order = True
    Options = StdoutOptions

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """Print the event's line and flush."""
        try:
            sys.stdout.write(render.line(event) + "\n")
            sys.stdout.flush()
        except OSError as exc:
            raise DeliveryError(f"cannot write to stdout: {exc}") from exc
