"""``/story/N/diff/A-B.png``: the diff picture of one edit, drawn on demand and cached on disk.

The same card as ``aggregator diff --image`` and the sinks' attachments
(``aggregator.digest.image``): drawn in headless Chromium the first time it is
asked for, then served from the picture cache (``[images] cache``), never from
the database. Without Chromium on the server the route answers 404 saying so,
and the pages show no picture links.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.digest.card import Card
from aggregator.digest.image import ImageError, card_from_reader
from aggregator.store.queries import Reader

if TYPE_CHECKING:
    from aggregator.web.state import Web


def routes(web: Web) -> list[Route]:
    """The picture route."""

    async def diff_picture(request: Request) -> Response:
        entry_id = request.path_params["entry_id"]
        old, new = request.path_params["old"], request.path_params["new"]
        if web.images is None:
            raise HTTPException(
                404, "diff pictures need Chromium on this server (apt-get install chromium)"
            )
        card = await web.read(_card, entry_id, old, new)
        try:
            png = await web.images.png(card)
        except ImageError as exc:
            raise HTTPException(503, str(exc)) from None
        name = f"diff-{entry_id}-v{old}-v{new}.png"
        return Response(
            png,
            media_type="image/png",
            headers={
                "Cache-Control": "private, max-age=86400",
                "Content-Disposition": f'inline; filename="{name}"',
            },
        )

    return [Route("/story/{entry_id:int}/diff/{old:int}-{new:int}.png", diff_picture)]


def _card(reader: Reader, entry_id: int, old: int, new: int) -> Card:
    try:
        return card_from_reader(reader, entry_id, old, new)
    except ImageError as exc:
        raise HTTPException(404, str(exc)) from None
