"""The hub's calls, answered from the database (so any node can answer them).

Verification of intent (WebSub 5.3): the challenge is echoed only for a request we
made and have not seen verified, for the topic we asked about; anything else is 404.
A denial (5.2) puts the source back on polling.

A delivery (7, 8) goes through, in order: a known, subscribed callback (404 / 410),
the size limit (413), the signature (a bad one is ignored and logged, and answered
202 as the spec asks, so a forger learns nothing), the content type and encoding
(415), the topic
its ``Link: rel="self"`` names (400), and the replay check (a delivery already stored
under the current secret is not stored again). Only then is the body parsed and
stored, through the pipeline, like a poll. Nothing of a refused delivery is stored.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

import structlog

from aggregator.config import SourceConfig
from aggregator.store import websub as db_websub
from aggregator.store import websub_callback as db_callback
from aggregator.store.db import ConnectionLost
from aggregator.websub import signature
from aggregator.websub.callback import Answer, Reader
from aggregator.websub.context import Context
from aggregator.websub.discover import link_header

log = structlog.get_logger("aggregator.websub")

MODES = ("subscribe", "unsubscribe", "denied")
#: The longest challenge echoed (hubs send a few dozen characters).
MAX_CHALLENGE = 1000

#: Content types a pushed body of each source kind may have (besides ``+xml``/``+json``
#: suffixes for feeds).
FEED_TYPES = (
    "application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/xml",
    "text/xml", "application/feed+json", "application/json",
)  # fmt: skip
PAGE_TYPES = ("text/html", "application/xhtml+xml")


def accepts(kind: str, content_type: str) -> bool:
    """Whether a ``kind`` source reads a body of ``content_type``."""
    media = content_type.split(";")[0].strip().lower()
    if kind == "feed":
        return media in FEED_TYPES or media.endswith(("+xml", "+json"))
    return media in PAGE_TYPES


def _seconds(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


class Receiver:
    """Answers verifications and stores deliveries for the callback endpoint."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def verify(self, token: str, params: Mapping[str, str]) -> Answer:
        """Confirm a request we made (echo ``hub.challenge``), or take note of a denial."""
        mode, topic = params.get("hub.mode", ""), params.get("hub.topic", "")
        challenge = params.get("hub.challenge", "")
        if mode not in MODES or not topic:
            return Answer(400, "hub.mode (subscribe, unsubscribe or denied) and hub.topic needed")
        if mode != "denied" and not 0 < len(challenge) <= MAX_CHALLENGE:
            return Answer(400, f"hub.challenge needed (at most {MAX_CHALLENGE} characters)")
        settings = self.ctx.settings
        lease = _seconds(params.get("hub.lease_seconds")) or int(settings.lease)
        call = functools.partial(
            db_callback.verify,
            self.ctx.store.store,
            token,
            mode,
            topic,
            lease=lease,
            reason=params.get("hub.reason", "")[:500],
            safety_poll=settings.safety_poll,
            retry=self.ctx.backoff,
        )
        try:
            found = await self.ctx.store.call(call)
        except ConnectionLost:
            return Answer(503, "the database is unavailable; try again")
        if found is None:
            log.warning("websub.verification_refused", mode=mode, topic=topic)
            return Answer(404, "no such request: this callback did not ask for that")
        state, row = found
        self._noted(state, row, lease, params.get("hub.reason", ""))
        self.ctx.kick()  # the row's next action moved
        return Answer(200, "" if mode == "denied" else challenge)

    def _noted(self, state: str, row: db_websub.Subscription, lease: int, reason: str) -> None:
        """Update the live sources and log what a verification changed."""
        ctx, name = self.ctx, self.ctx.name(row.source_id)
        if state == "active":
            ctx.live[row.source_id] = time.time() + lease
            first = row.state not in db_websub.SUBSCRIBED
            report = log.info if first else log.debug
            report("websub.subscribed", source=name, hub=row.hub, lease_seconds=lease)
            return
        ctx.live.pop(row.source_id, None)
        if state == "denied":
            ctx.wake(time.time())
            log.warning("websub.denied", source=name, hub=row.hub, reason=reason, then="polling")
        else:
            log.info("websub.unsubscribed", source=name, hub=row.hub)

    async def deliver(self, token: str, read: Reader, headers: Mapping[str, str]) -> Answer:
        """Check one delivery and store it like a poll; nothing is stored if it is refused."""
        try:
            return await self._deliver(token, read, headers)
        except ConnectionLost:
            return Answer(503, "the database is unavailable; try again")

    async def _deliver(self, token: str, read: Reader, headers: Mapping[str, str]) -> Answer:
        ctx = self.ctx
        db = ctx.store.store.db
        sub = await ctx.store.call(db_websub.by_token, db, token)
        if sub is None:
            return Answer(404, "no subscription here")
        if sub.state not in db_websub.SUBSCRIBED:
            return Answer(410, "this subscription has ended")
        source = ctx.source(sub.source_id)
        if source is None:
            return Answer(503, "this node's config does not have that source; try another node")
        cap = ctx.config.fetch.max_bytes
        body = await read(cap)
        if body is None:
            return await self._refuse(sub, 413, f"a delivery over the {cap}-byte limit")
        given = headers.get("x-hub-signature")
        if not signature.signature_ok(given, body, (sub.secret, sub.new_secret)):
            await self._refuse(sub, 202, "a delivery with a missing or bad signature was ignored")
            return Answer(202)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return await self._refuse(sub, 415, f"a {encoding}-encoded delivery is not read")
        ctype = headers.get("content-type", "")
        if not accepts(source.kind, ctype):
            text = f"content type {ctype or 'none'!r} is not one a {source.kind} source reads"
            return await self._refuse(sub, 415, text)
        links = link_header(headers.get("link", ""), sub.topic or "")
        selves = [url for url, rels in links if "self" in rels]
        if selves and sub.topic not in selves:
            text = f"topic {selves[0]} is not the one subscribed at this callback"
            return await self._refuse(sub, 400, text)
        assert given is not None
        mark = signature.mark(given)
        if not await ctx.store.call(db_callback.take_mark, db, sub.source_id, mark):
            text = "a replay of a delivery already received: not stored again"
            return await self._refuse(sub, 202, text)
        return await self._store(sub, source, body, headers, mark)

    async def _store(
        self,
        sub: db_websub.Subscription,
        source: SourceConfig,
        body: bytes,
        headers: Mapping[str, str],
        mark: str,
    ) -> Answer:
        ctx = self.ctx
        db = ctx.store.store.db
        result = await ctx.pipeline.push(source, body, headers)
        if result.error is not None and result.error.startswith("internal error"):
            await ctx.store.call(db_callback.drop_mark, db, sub.source_id, mark)
            return Answer(500, "not stored; try again")
        if await ctx.store.call(db_callback.note_delivery, db, sub.id):
            if sub.expires_at is not None:
                ctx.live[sub.source_id] = time.time() + (sub.expires_in() or 0.0)
            log.info("websub.pushing_again", source=source.name, hub=sub.hub)
        return Answer(202)

    async def _refuse(self, sub: db_websub.Subscription, status: int, why: str) -> Answer:
        """Log and count a refused (or ignored) delivery."""
        log.warning("websub.delivery_refused", source=self.ctx.name(sub.source_id), why=why)
        await self.ctx.store.call(db_callback.note_rejected, self.ctx.store.store.db, sub.id, why)
        return Answer(status, why)
