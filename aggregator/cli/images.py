"""``aggregator diff ENTRY --image FILE.png``: the diff as a picture (see docs/diff-images.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aggregator import config as config_mod
from aggregator import log
from aggregator.cli.common import database_path, fail
from aggregator.config import Config
from aggregator.digest.image import DiffImages, image_settings
from aggregator.errors import AggregatorError, ConfigError


def image_config(config_path: str | None, database: str | None) -> Config:
    """The config for pictures ([browser], [images]; defaults if none), reading ``database``."""
    log.configure(level="WARNING")  # stdout is the command's; Chromium's own news is debug
    try:
        config = config_mod.load(config_mod.find_config(config_path))
    except config_mod.NoConfigFound:
        config = config_mod.parse({}, "<defaults>")
    except ConfigError as exc:
        fail(str(exc), code=2)
        raise  # unreachable: fail() exits
    storage = config.storage.model_copy(update={"database": database_path(config_path, database)})
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
