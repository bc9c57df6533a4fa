"""Push in the daemon: discover hubs, subscribe, renew, and fall back to polling.

``WebSub`` is what the daemon holds:

* after each poll (``Pipeline.after_poll``) it records the hub and topic the response
  named (``discover``), and notes a *silent* hub: a poll that finds a change the hub did
  not push puts the source back on its usual polling until the hub delivers again;
* ``plan`` is the scheduler's hook: a source with a live subscription is next polled at
  ``[websub] safety_poll`` (1 h by default), not sooner;
* ``run`` acts on the subscriptions due (``store/websub.py``, claimed by one node at a
  time): asks the hub, renews at 80 % of the lease, gives up on a request the hub does
  not verify within ``verify_timeout``, and when a lease lapses makes the source due at
  once; a refused request is asked again after ``retry``, doubling up to a day;
* the callback endpoint (``callback``, ``receive``) answers the hub.

Without ``[websub] callback`` nothing is asked of any hub, no endpoint listens, and
every source is polled as before (hubs found are still recorded, for ``sources``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import structlog

from aggregator.config import SourceConfig
from aggregator.errors import ConfigError, FetchError
from aggregator.fetch.netguard import check_url
from aggregator.pipeline import Pipeline, PollResult
from aggregator.store import websub as db_websub
from aggregator.store.db import ConnectionLost
from aggregator.timeutil import from_db
from aggregator.websub import signature
from aggregator.websub.callback import CallbackServer
from aggregator.websub.context import Context
from aggregator.websub.receive import Receiver

log = structlog.get_logger("aggregator.websub")

#: Seconds between looks at the database for what other nodes did (PostgreSQL).
SHARED_EVERY = 2.0
#: Seconds between looks when this node is the only one (SQLite).
ALONE_EVERY = 60.0
#: Subscriptions acted on at once.
BATCH = 16


class WebSub:
    """The daemon's WebSub subscriber."""

    def __init__(self, pipeline: Pipeline, node_id: str, *, shared: bool) -> None:
        self.ctx = Context(pipeline, node_id)
        self.every = SHARED_EVERY if shared else ALONE_EVERY
        #: The hub and topic last recorded for each source (None, None: none named).
        self.known: dict[int, tuple[str | None, str | None]] = {}
        self.server: CallbackServer | None = None
        self.kick = asyncio.Event()
        self.ctx.kick = self.kick.set
        self.tasks: set[asyncio.Task[None]] = set()
        self._off: frozenset[int] = frozenset()

    @property
    def enabled(self) -> bool:
        """Whether push is on (``[websub] callback`` is set)."""
        return self.ctx.settings.callback is not None

    @property
    def port(self) -> int | None:
        """The port the callback endpoint listens on, once started."""
        return self.server.port if self.server is not None else None

    async def start(self, wake: Callable[[float], None] | None = None) -> None:
        """Load what the database knows; bind the callback endpoint if push is on.

        Raises:
            OSError: ``[websub] listen`` cannot be listened on.
        """
        store = self.ctx.store
        if wake is not None:
            self.ctx.wake = wake
        self.known = await store.call(db_websub.discovered, store.store.db)
        self.ctx.pipeline.after_poll.append(self.after_poll)
        if not self.enabled:
            return
        self.ctx.live = await store.call(db_websub.live, store.store.db)
        await store.call(db_websub.wake_waiting, store.store.db)
        host, port = self.ctx.settings.address
        try:
            self.server = await CallbackServer(Receiver(self.ctx), host, port).start()
        except OSError as exc:
            raise ConfigError(
                f"[websub] listen = {self.ctx.settings.listen!r}: cannot listen there:"
                f" {exc.strerror or exc}"
            ) from None
        log.info(
            "websub.listening",
            listen=f"{host}:{self.server.port}",
            callback=self.ctx.settings.callback,
            live=len(self.ctx.live),
        )

    async def stop(self) -> None:
        """Stop the endpoint (requests in progress finish) and the background work."""
        if self.server is not None:
            await self.server.stop()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- the scheduler's hook and the pipeline's ------------------------------------------

    def plan(self, source_id: int, delay: float, reason: str) -> tuple[float, str]:
        """The next poll of a source: a live subscription defers it to the safety poll."""
        safety = self.ctx.settings.safety_poll
        if delay >= safety or not self.ctx.is_live(source_id):
            return delay, reason
        return safety, "push: safety poll"

    def after_poll(self, source: SourceConfig, result: PollResult) -> None:
        """Record what a poll said about push; a change the hub missed makes it silent."""
        source_id = self.ctx.pipeline.source_ids.get(source.name)
        if source_id is None:
            return
        found = result.push_links
        pair = (found.hub, found.topic) if found is not None else None
        if pair is not None and source.push == "auto" and self.known.get(source_id) != pair:
            recorded = source_id in self.known
            self.known[source_id] = pair
            if recorded or pair[0] is not None:  # no hub and no row: nothing to write
                self._spawn(self._discovered(source, source_id, *pair))
        if result.counts and self.ctx.is_live(source_id):
            self.ctx.live.pop(source_id, None)
            self._spawn(self._silent(source, source_id, result))

    async def _discovered(
        self, source: SourceConfig, source_id: int, hub: str | None, topic: str | None
    ) -> None:
        store = self.ctx.store
        call = functools.partial(
            db_websub.note_discovery,
            store.store.db,
            source_id,
            hub,
            topic,
            token=signature.new_token(),
            ask=self.enabled,
        )
        state = await store.call(call)
        if state == "discovered":
            log.debug("websub.hub_found", source=source.name, hub=hub, topic=topic)
            self.ctx.live.pop(source_id, None)
            self.kick.set()
        elif state == "none":
            log.info("websub.hub_gone", source=source.name, then="polling")
            self.ctx.live.pop(source_id, None)

    async def _silent(self, source: SourceConfig, source_id: int, result: PollResult) -> None:
        why = f"a poll found changes the hub did not push ({dict(result.counts)})"
        store = self.ctx.store
        if await store.call(db_websub.mark_silent, store.store.db, source_id, why):
            log.warning("websub.silent", source=source.name, then="polling until it pushes again")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except ConnectionLost:
            pass  # database.lost was logged; the next poll records it again
        except Exception as exc:  # must never stop the daemon
            log.exception("websub.failed", error=str(exc))

    # -- subscribing, renewing, expiring ---------------------------------------------------

    async def run(self) -> None:
        """Act on due subscriptions until cancelled (does nothing if push is off)."""
        if not self.enabled:
            return
        try:
            while True:
                self.kick.clear()
                try:
                    wait = await self._round()
                except ConnectionLost:
                    wait = 1.0
                except Exception as exc:  # must never stop the daemon
                    log.warning("websub.round_failed", error=str(exc))
                    wait = 5.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self.kick.wait()
        finally:  # give back the rows this node was acting on: another may take them now
            with contextlib.suppress(Exception):
                store = self.ctx.store
                await store.call(db_websub.release_node, store.store.db, self.ctx.node_id)

    async def _round(self) -> float:
        """Act on what is due; seconds until the next look."""
        store = self.ctx.store
        db = store.store.db
        self.ctx.live = await store.call(db_websub.live, db)
        await self._settle_off()
        due = await store.call(
            functools.partial(
                db_websub.claim_due,
                db,
                self.ctx.node_id,
                limit=BATCH,
                busy_for=self.ctx.config.fetch.timeout * 2 + 30,
            )
        )
        await asyncio.gather(*(self._act(sub) for sub in due))
        if len(due) == BATCH:
            return 0.0
        at = await store.call(db_websub.next_due, db)
        wait = self.every if at is None else from_db(at).timestamp() - time.time()
        return min(max(wait, 0.0), self.every) + 0.01

    async def _settle_off(self) -> None:
        """Sources switched to ``push = "off"``: their subscriptions are due to be ended."""
        off = frozenset(
            i for s in self.ctx.config.sources
            if s.push == "off" and (i := self.ctx.pipeline.source_ids.get(s.name)) is not None
        )  # fmt: skip
        if off != self._off:
            self._off = off
            store = self.ctx.store
            await store.call(db_websub.due_now, store.store.db, sorted(off))

    async def _act(self, sub: db_websub.Subscription) -> None:
        store = self.ctx.store
        db = store.store.db
        try:
            source = self.ctx.source(sub.source_id)
            if source is None:
                return
            if sub.pending is not None:  # the hub did not verify in time
                waited = f"the hub did not verify the request within {self._wait():g}s"
                await self._failed(source, sub, waited)
            elif source.push == "off":
                await self._switch_off(source, sub)
            elif sub.state in db_websub.SUBSCRIBED and (sub.expires_in() or 0) <= 0:
                await self._expired(source, sub)
            elif sub.state in (*db_websub.SUBSCRIBED, *db_websub.TO_ASK) and sub.hub:
                await self._request(source, sub, "subscribe")
            else:
                await store.call(db_websub.due_never, db, sub.id)
        except Exception as exc:  # one subscription's trouble must not stop the others
            log.warning("websub.action_failed", source=self.ctx.name(sub.source_id), error=str(exc))
        finally:
            with contextlib.suppress(Exception):
                await store.call(db_websub.release, db, sub.id, self.ctx.node_id)

    def _wait(self) -> float:
        return self.ctx.settings.verify_timeout

    async def _request(self, source: SourceConfig, sub: db_websub.Subscription, mode: str) -> None:
        """Ask the hub to (re)subscribe or unsubscribe; the hub then verifies at the callback."""
        assert sub.hub is not None and sub.topic is not None
        store = self.ctx.store
        settings = self.ctx.settings
        token = sub.token or signature.new_token()
        secret = signature.new_secret() if mode == "subscribe" else None
        call = functools.partial(
            db_websub.begin_request,
            store.store.db,
            sub,
            mode,
            token=token,
            secret=secret,
            wait=self._wait(),
        )
        asked = await store.call(call)
        if asked is None:
            return
        form = {
            "hub.callback": f"{settings.callback}/{token}",
            "hub.mode": mode,
            "hub.topic": sub.topic,
        }
        if secret is not None:
            form |= {"hub.lease_seconds": str(int(settings.lease)), "hub.secret": secret}
        try:
            await self._plain_http_check(sub.hub, source.url)
            status, text = await self.ctx.pipeline.fetcher.post_form(
                sub.hub, form, origin=source.url
            )
        except FetchError as exc:
            await self._failed(source, asked, f"cannot reach the hub: {exc}")
            return
        if 200 <= status < 300:
            renewal = sub.state in db_websub.SUBSCRIBED
            log.debug("websub.requested", source=source.name, mode=mode, renewal=renewal)
            return
        await self._failed(source, asked, f"the hub refused: HTTP {status} {text[:200]}".strip())

    async def _plain_http_check(self, hub: str, origin: str) -> None:
        """Refuse to send a secret in clear: a plain-http hub must be on loopback."""
        if urlsplit(hub).scheme == "https":
            return
        local = await check_url(hub, allow_loopback=True, allow_private=True)
        if not local:
            raise FetchError(
                "the hub is plain http: the subscription's secret would travel in clear"
                " (WebSub sends it only over https)"
            )

    async def _failed(self, source: SourceConfig, sub: db_websub.Subscription, why: str) -> None:
        store = self.ctx.store
        call = functools.partial(
            db_websub.request_failed, store.store.db, sub, why, retry=self.ctx.backoff
        )
        state = await store.call(call)
        if state is None:
            return  # verified meanwhile
        then = "polling" if state != "active" else "still pushed until the lease ends"
        log.warning("websub.refused", source=source.name, hub=sub.hub, error=why, then=then)

    async def _expired(self, source: SourceConfig, sub: db_websub.Subscription) -> None:
        store = self.ctx.store
        call = functools.partial(db_websub.expire, store.store.db, sub, retry=self.ctx.backoff)
        if await store.call(call):
            self.ctx.live.pop(sub.source_id, None)
            await store.call(db_websub.poll_now, store.store, sub.source_id)
            self.ctx.wake(time.time())
            log.warning("websub.expired", source=source.name, hub=sub.hub, then="polling")

    async def _switch_off(self, source: SourceConfig, sub: db_websub.Subscription) -> None:
        self.ctx.live.pop(sub.source_id, None)
        if sub.state in db_websub.SUBSCRIBED and sub.hub and sub.topic:
            await self._request(source, sub, "unsubscribe")
        else:
            await self.ctx.store.call(db_websub.switch_off, self.ctx.store.store.db, sub.source_id)
