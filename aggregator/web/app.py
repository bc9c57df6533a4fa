"""``aggregator serve``: a read-only web view of the history (Starlette + Jinja2).

Each request's queries run in a worker thread (``run_in_threadpool``) on that thread's
own read-only connection, so the event loop never waits on SQLite and the daemon can
write meanwhile (WAL). Pages are plain HTML that read fully without JavaScript; one
small script (``static/live.js``) adds changes as the live stream announces them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from aggregator.web import pictures, views
from aggregator.web.security import Guard
from aggregator.web.state import HERE, Settings, Web

__all__ = ["Settings", "Web", "create_app"]


def create_app(settings: Settings) -> Guard:
    """The ASGI app: routes, static files, the live feed, behind the security guard."""
    web = Web(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await web.live.start()
        try:
            yield
        finally:
            await web.live.stop()
            if web.images is not None:
                await web.images.close()

    routes = [
        *views.routes(web),
        *pictures.routes(web),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=views.handlers(web))
    app.state.web = web
    return Guard(app, token=settings.token, check_host=settings.check_host)
