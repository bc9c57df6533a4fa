"""``jsonl``: append one JSON object per event to a file, fsync'd.

The file is opened, appended to, fsync'd and closed for every event, so
log rotation (rename, then a new file) is safe: the next event goes to the
new file. A re-delivery appends the same JSON again (same ``id``).

With ``image = true`` a change event's diff picture is written beside the file
(``<name>-images/diff-ENTRY-vA-vB.png``) and its path added to the line as
``"image"``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aggregator.notify import images
from aggregator.notify.base import DeliveryError, Options, Sink


class JsonlOptions(Options):
    """``path``: the file to append to (created with its directories).

    A relative ``path`` in the config is resolved against the config file's
    directory when the config is loaded, as ``[storage] database`` is.
    """

    path: str
    #: Save each edit's diff picture beside the file and put its path in the line.
    image: bool = False


class JsonlSink(Sink):
    """Appends events to a JSON Lines file."""

    kind = "jsonl"
    concurrency = 1
    in_order = True
    Options = JsonlOptions

    @property
    def image_dir(self) -> Path:
        """Where pictures go: ``<file name>-images`` beside the file."""
        path = Path(self.options.path)
        return path.with_name(f"{path.stem}-images")

    async def aclose(self) -> None:
        """Stop the Chromium pictures were drawn in (started again if needed)."""
        if self.options.image:
            await images.release()

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """Append the event's JSON as one line (with its picture's path, if any)."""
        if self.options.image and (png := await images.picture_or_none(event, self.name)):
            target = self.image_dir / images.file_name(event)
            try:
                await asyncio.to_thread(_write, target, png)
            except OSError as exc:
                raise DeliveryError(f"cannot write {target}: {exc}") from exc
            raw = images.with_key(raw, "image", str(target))
        line = raw + "\n"
        try:
            await asyncio.to_thread(_append, Path(self.options.path), line.encode())
        except OSError as exc:
            raise DeliveryError(f"cannot append to {self.options.path}: {exc}") from exc


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
