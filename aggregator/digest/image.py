"""Diff pictures: a card (``digest.card``) screenshotted by Chromium, kept in a cache on disk.

``DiffImages.for_versions`` reads the two versions (read-only), builds the card's
HTML and returns its PNG, drawing it only if the cache does not hold it yet.
The cache key is a hash of the card's HTML and the picture's size, so a
picture is never stale and nothing about it is kept in the database. The cache
directory keeps at most ``[images] cache_max`` bytes: the least recently used
pictures go first.

The card is rendered in a tab with JavaScript off and no network at all (its
context's proxy refuses every connection), on top of the card's own
Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from aggregator.chromium import BrowserError, Chromium, ChromiumSettings, shared
from aggregator.config import Config
from aggregator.digest.card import Card, card_for, card_html
from aggregator.errors import AggregatorError, StoreError
from aggregator.store.queries import Reader

log = structlog.get_logger("aggregator.images")

#: Bump when the card's rendering changes in a way its HTML does not show.
RENDERER = "card-1"
RENDER_LIMIT = 30.0  # seconds for one picture, Chromium's start included


class ImageError(AggregatorError):
    """A diff picture could not be made (no such versions, or Chromium failed)."""


@dataclass(frozen=True, slots=True)
class ImageSettings:
    """Where pictures go, how big they are, and the Chromium that draws them."""

    cache: Path
    cache_max: int
    width: int
    max_height: int
    chromium: ChromiumSettings


def image_settings(config: Config) -> ImageSettings:
    """``[images]`` and ``[browser]`` as settings (``ConfigError`` if there is no Chromium)."""
    return ImageSettings(
        cache=cache_dir(config),
        cache_max=config.images.cache_max,
        width=config.images.width,
        max_height=config.images.max_height,
        chromium=config.browser.settings(),
    )


def cache_dir(config: Config) -> Path:
    """``[images] cache``, else ``<database name>-images`` beside the database file."""
    if config.images.cache:
        return Path(config.images.cache).expanduser()
    database = Path(config.storage.database)
    return database.with_name(f"{database.stem}-images")


class DiffImages:
    """Makes and caches diff pictures (see the module docstring)."""

    def __init__(self, settings: ImageSettings, chromium: Chromium | None = None) -> None:
        self.settings = settings
        self._chromium = chromium
        self._lock = asyncio.Lock()

    @property
    def chromium(self) -> Chromium:
        """The Chromium pictures are drawn in (this event loop's shared one by default)."""
        if self._chromium is None:
            self._chromium = shared(self.settings.chromium)
        return self._chromium

    async def for_versions(
        self, database: str, entry_id: int, old: int | None = None, new: int | None = None
    ) -> bytes:
        """The PNG of ``entry_id`` from version ``old`` to ``new`` (default: the last edit).

        Raises:
            ImageError: no such entry or versions, or the picture could not be drawn.
        """
        card = await asyncio.to_thread(read_card, database, entry_id, old, new)
        return await self.png(card)

    async def png(self, card: Card) -> bytes:
        """The picture of ``card``: from the cache, else drawn now (and cached if possible)."""
        page = card_html(card, width=self.settings.width, max_height=self.settings.max_height)
        key = hashlib.sha256(f"{RENDERER}\0{self.settings.width}\0{page}".encode()).hexdigest()
        path = self.settings.cache / f"{key[:32]}.png"
        cached = await asyncio.to_thread(_cached, path)
        if cached is not None:
            return cached
        png = await self.draw(page)
        try:
            await asyncio.to_thread(_store, path, png, self.settings.cache_max)
        except OSError as exc:  # a read-only place: the picture is still good
            log.debug("images.not_cached", path=str(path), error=str(exc))
        return png

    async def draw(self, page: str) -> bytes:
        """A PNG of the HTML ``page`` (no script, no network), ``width`` wide.

        Raises:
            ImageError: Chromium could not draw it in time.
        """
        try:
            async with self.chromium.tab(
                javascript=False, width=self.settings.width, height=1, time_limit=RENDER_LIMIT
            ) as tab:
                await tab.set_content(page)
                png, _height = await tab.screenshot(self.settings.width, self.settings.max_height)
        except TimeoutError:
            raise ImageError(f"the picture took longer than {RENDER_LIMIT:g}s to draw") from None
        except BrowserError as exc:
            raise ImageError(f"Chromium could not draw the picture: {exc}") from None
        return png

    async def close(self) -> None:
        """Stop Chromium if this object started it (a later picture starts it again)."""
        if self._chromium is not None:
            await self._chromium.close()


def read_card(database: str, entry_id: int, old: int | None, new: int | None) -> Card:
    """The card of ``entry_id`` between versions ``old`` and ``new``, read read-only.

    ``new`` defaults to the latest version and ``old`` to the one before ``new``.

    Raises:
        ImageError: the entry or a version does not exist, or there is only one version.
    """
    try:
        reader = Reader.open(database)
    except StoreError as exc:
        raise ImageError(str(exc)) from None
    try:
        return card_from_reader(reader, entry_id, old, new)
    finally:
        reader.close()


def card_from_reader(reader: Reader, entry_id: int, old: int | None, new: int | None) -> Card:
    """``read_card`` on an open ``Reader``."""
    try:
        entry = reader.resolve_entry(str(entry_id))
        versions = {v.version: v for v in reader.versions(entry.id)}
    except StoreError as exc:
        raise ImageError(str(exc)) from None
    if entry.id != entry_id:
        raise ImageError(f"no entry {entry_id}")
    new = new if new is not None else max(versions, default=0)
    old = old if old is not None else new - 1
    if old not in versions or new not in versions or old == new:
        have = f"versions 1 to {max(versions)}" if versions else "no versions"
        raise ImageError(f"entry {entry_id} has no versions {old} and {new} to compare ({have})")
    return card_for(entry.source, entry.url, versions[old], versions[new])


def _cached(path: Path) -> bytes | None:
    """The cached picture at ``path`` (marked as just used), or None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(OSError):  # a read-only cache still serves what it holds
        os.utime(path)
    return data


def _store(path: Path, png: bytes, cache_max: int) -> None:
    """Write ``png`` at ``path`` atomically, then trim the cache to ``cache_max`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(png)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _trim(path.parent, cache_max, keep=path)


def _trim(directory: Path, cache_max: int, keep: Path) -> None:
    """Delete the least recently used pictures until the rest fit in ``cache_max`` bytes."""
    files = []
    for entry in os.scandir(directory):
        if entry.name.endswith(".png") and not entry.name.startswith("."):
            stat = entry.stat()
            files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= cache_max:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size
