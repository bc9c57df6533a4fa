"""The web view's shared state: settings, per-thread readers, templates, the live feed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from aggregator.digest.image import DiffImages, ImageSettings
from aggregator.store import browse as queries
from aggregator.store import open_database
from aggregator.store.queries import Reader
from aggregator.web import render
from aggregator.web.live import LiveFeed

HERE = Path(__file__).parent
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What the app serves and how."""

    database: str
    root_path: str = ""
    token: str | None = None
    check_host: bool = True  # only loopback Host headers (no token, no proxy)
    live_interval: float = 1.0
    page_size: int = 50
    tags: dict[str, list[str]] = field(default_factory=dict)  # tag -> source names
    #: Diff pictures (None: no Chromium on this server, so no picture links).
    images: ImageSettings | None = None


class Readers:
    """One read-only ``Reader`` per worker thread, opened on first use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def get(self) -> Reader:
        """This thread's reader (connections live as long as the worker threads)."""
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = Reader(open_database(self.path, readonly=True))
        return reader


class Web:
    """The app's shared state: settings, readers, templates, the live feed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.readers = Readers(settings.database)
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(root=settings.root_path, **render.TEMPLATE_HELPERS)
        self.images = DiffImages(settings.images) if settings.images else None
        self.templates.globals["pictures"] = self.images is not None
        self.live = LiveFeed(
            max_id=lambda: queries.max_change_id(self.readers.get()),
            after=lambda after: queries.changes_after(self.readers.get(), after),
            render=lambda row: render.live_payload(self.templates, row),
            interval=settings.live_interval,
        )

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(reader, *args, **kwargs)`` in a worker thread on its own connection."""
        return await run_in_threadpool(lambda: fn(self.readers.get(), *args, **kwargs))
