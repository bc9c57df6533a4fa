"""``aggregator diff ENTRY --image FILE.png``: the diff as a picture (see docs/diff-images.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aggregator.cli.common import database_location, fail, found_config
from aggregator.config import Config
from aggregator.digest.image import DiffImages, image_settings
from aggregator.errors import AggregatorError, ConfigError


def image_config() -> Config:
    """The config for pictures ([browser], [images]; defaults if none), reading the database
    the command chose (``--db`` first)."""
    from aggregator import config as config_mod
    from aggregator import log

    log.configure(level="WARNING")  # stdout is the command's; Chromium's own news is debug
    config = found_config() or config_mod.parse({}, "<defaults>")
    location = database_location("read", config=config)
    storage = config.storage.model_copy(update={"database": location})
    return config.model_copy(update={"storage": storage})


def write_diff_image(
    config: Config, entry_id: int, old: int, new: int, target: str
) -> tuple[int, int]:
    """Draw the picture of ``entry_id`` from ``old`` to ``new`` into ``target``; its size."""
    try:
        images = DiffImages(image_settings(config))
    except ConfigError as exc:
        fail(f"--image needs Chromium: {exc}", code=2)
        raise  # unreachable

    async def draw() -> bytes:
        try:
            return await images.for_versions(config.storage.database, entry_id, old, new)
        finally:
            await images.close()

    try:
        png = asyncio.run(draw())
    except AggregatorError as exc:
        fail(str(exc))
        raise  # unreachable
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return png_size(png)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
