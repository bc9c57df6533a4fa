"""``jsonl``: append one JSON object per event to a file, fsync'd.

The file is opened, appended to, fsync'd and closed for every event, so
log rotation (rename, then a new file) is safe: the next event goes to the
new file. A re-delivery appends the same JSON again (same ``id``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aggregator.notify.base import DeliveryError, Options, Sink


class JsonlOptions(Options):
    """``path``: the file to append to (created with its directories).

    A relative ``path`` in the config is resolved against the config file's
    directory when the config is loaded, as ``[storage] database`` is.
    """

    path: str


class JsonlSink(Sink):
    """Appends events to a JSON Lines file."""

    kind = "jsonl"
    concurrency = 1
    in_order = True
    Options = JsonlOptions

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """Append the event's JSON as one line."""
        line = raw + "\n"
        try:
            await asyncio.to_thread(_append, Path(self.options.path), line.encode())
        except OSError as exc:
            raise DeliveryError(f"cannot append to {self.options.path}: {exc}") from exc


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
