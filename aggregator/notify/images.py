"""Diff pictures for sinks with ``image = true`` (Apprise and email attach it, jsonl saves it).

A sink knows its own options only; the database the versions are read from, the
``[images]`` settings and the Chromium to draw with come from the config this
process runs with, registered once by ``use(config)`` (``aggregator run``,
``poll`` and ``outbox`` do it when they load the config). A change event with a
version before and after gets a picture of that edit; other events get none.
Pictures are drawn in this event loop's shared Chromium and cached on disk like
those of ``aggregator diff --image`` and the web view.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

import structlog

from aggregator.config import Config
from aggregator.digest.image import DiffImages, ImageError, image_settings
from aggregator.errors import ConfigError

log = structlog.get_logger("aggregator.notify")

_config: Config | None = None
_images: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DiffImages] = (
    weakref.WeakKeyDictionary()
)


def use(config: Config) -> None:
    """Make ``config`` the one sinks' pictures are made with (database, [images], [browser])."""
    global _config
    _config = config


def versions(event: dict[str, Any]) -> tuple[int, int, int] | None:
    """(entry id, version before, version after) of a change event that has both versions."""
    if event.get("type") != "change":
        return None
    version = event.get("version") or {}
    before, after = version.get("before"), version.get("after")
    entry = (event.get("entry") or {}).get("id")
    if not (isinstance(before, int) and isinstance(after, int) and isinstance(entry, int)):
        return None
    return (entry, before, after) if before != after else None


def file_name(event: dict[str, Any]) -> str:
    """The picture's file name, e.g. ``diff-42-v2-v3.png``."""
    entry, before, after = versions(event) or (0, 0, 0)
    return f"diff-{entry}-v{before}-v{after}.png"


async def picture(event: dict[str, Any]) -> bytes | None:
    """The PNG of the edit ``event`` reports, or None if it reports no edit.

    Raises:
        ImageError: the picture could not be made (no config registered, no
            Chromium, versions gone, or Chromium failed).
    """
    found = versions(event)
    if found is None:
        return None
    if _config is None:
        raise ImageError("no config registered for pictures (aggregator.notify.images.use)")
    loop = asyncio.get_running_loop()
    images = _images.get(loop)
    if images is None:
        try:
            images = _images[loop] = DiffImages(image_settings(_config))
        except ConfigError as exc:
            raise ImageError(str(exc)) from None
    entry, before, after = found
    return await images.for_versions(_config.storage.database, entry, before, after)


async def release() -> None:
    """Stop the Chromium pictures were drawn in, if any (a sink closing calls this)."""
    images = _images.pop(asyncio.get_running_loop(), None)
    if images is not None:
        await images.close()


async def picture_or_none(event: dict[str, Any], sink: str) -> bytes | None:
    """``picture(event)``, or None with a warning when it cannot be made.

    The notification matters more than its picture: a sink sends without it
    rather than holding its queue (the warning says why).
    """
    try:
        return await picture(event)
    except ImageError as exc:
        log.warning("sink.image_failed", sink=sink, event_id=event.get("id"), error=str(exc))
        return None


def with_key(raw: str, key: str, value: Any) -> str:
    """The event's exact JSON text ``raw`` with one more top-level key (the rest byte-identical)."""
    text = raw.rstrip()
    if not text.endswith("}") or text.replace(" ", "") == "{}":
        raise ValueError("not a JSON object with members")
    return f"{text[:-1]}, {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}}}"
