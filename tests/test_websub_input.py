"""What the WebSub callback refuses, and that nothing of it is stored.

Forged signatures (ignored, answered 2xx), verifications we did not ask for (404),
oversized bodies (413), wrong content types (415), a topic that is not the one
subscribed (400), and replays of an old delivery (not stored again). Then several
nodes on one PostgreSQL database: any node's endpoint answers the hub.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests import pg, websubrig
from tests.conftest import Harness
from tests.hub import Hub
from tests.receivers import WebhookReceiver
from tests.server import TestServer
from tests.websubrig import Rig, Running, free_port, hub_call, subscribed, until

BACKENDS = ("sqlite", "postgresql")
_hub, _receiver, _rig = websubrig._hub, websubrig._receiver, websubrig._rig  # fixtures


def changes(rig: Rig) -> int:
    return len(rig.harness.rows("SELECT id FROM changes"))


async def test_a_forged_delivery_is_ignored_and_logged(rig: Rig) -> None:
    """A delivery signed with another secret, or not signed, is answered 202 and ignored:
    no fetch, no change, no event; the subscription counts it."""
    async with Running(rig):
        await subscribed(rig)
        before = changes(rig)
        callback = rig.hub.requests[0]["hub.callback"]
        rig.items = 4
        body = rig.publish_locally()
        forged = await hub_call(rig.hub.deliver, callback, body, topic=rig.topic, secret="guess")
        unsigned = await hub_call(rig.hub.deliver, callback, body, topic=rig.topic, secret=None)
        sha1 = await hub_call(
            rig.hub.deliver,
            callback,
            body,
            topic=rig.topic,
            secret=None,
            headers={"X-Hub-Signature": "sha1=" + "0" * 40},
        )
    assert [forged.status, unsigned.status, sha1.status] == [202, 202, 202]
    assert rig.pushed() == [] and changes(rig) == before and rig.receiver.received == []
    row = rig.row()
    assert row["rejected"] == 3 and "bad signature" in row["last_error"]
    assert row["state"] == "active"


async def test_a_verification_we_did_not_ask_for_is_refused(rig: Rig) -> None:
    """A challenge for another topic, for an unknown callback, or for a subscription we
    have not asked to change gets 404 and no echo; nothing changes."""
    async with Running(rig):
        await subscribed(rig)
        callback = rig.hub.requests[0]["hub.callback"]
        asks = [
            (callback, {"hub.mode": "subscribe", "hub.topic": rig.topic + "?other"}),
            (rig.callback + "/not-a-token", {"hub.mode": "subscribe", "hub.topic": rig.topic}),
            (callback, {"hub.mode": "subscribe", "hub.topic": rig.topic}),  # none pending
            (callback, {"hub.mode": "unsubscribe", "hub.topic": rig.topic}),
            (callback, {"hub.mode": "denied", "hub.topic": rig.topic + "?other"}),
        ]
        answers = [
            await hub_call(rig.hub.challenge, url, **params, **{"hub.challenge": "c-1234"})
            for url, params in asks
        ]
        row = rig.row()
    assert [a.status_code for a in answers] == [404] * len(asks)
    assert all("c-1234" not in a.text for a in answers)
    assert row["state"] == "active" and row["verified_at"] == rig.row()["verified_at"]


async def test_bad_deliveries_are_refused_and_nothing_is_stored(rig: Rig) -> None:
    """A body over [fetch] max_bytes (413), a content type a feed is not or a compressed
    body (415), and a topic other than the subscribed one (400) are refused, even signed;
    nothing is stored."""
    rig.harness.extra = ""
    rig.write()
    rig.harness.extra += "[fetch]\nmax_bytes = 4000\n"
    rig.harness.config()
    async with Running(rig):
        await subscribed(rig)
        before = changes(rig)
        callback = rig.hub.requests[0]["hub.callback"]
        secret = rig.row()["secret"]
        rig.items = 80
        big = rig.publish_locally()
        rig.items = 4
        body = rig.publish_locally()

        def send(payload: bytes, **kwargs: str) -> int:
            topic = kwargs.pop("topic", rig.topic)
            sent = rig.hub.deliver(callback, payload, topic=topic, secret=secret, **kwargs)
            return sent.status

        statuses = [
            await hub_call(send, big),
            await hub_call(send, body, content_type="text/html"),
            await hub_call(send, body, headers={"Content-Encoding": "gzip"}),
            await hub_call(send, body, topic=rig.harness.server.url("/other.xml")),
        ]
    assert len(big) > 4000
    assert statuses == [413, 415, 415, 400]
    assert rig.pushed() == [] and changes(rig) == before and rig.receiver.received == []
    assert rig.row()["rejected"] == 4


async def test_a_replayed_delivery_is_not_stored_again(rig: Rig) -> None:
    """Replaying an old signed delivery after a newer one stores nothing: the story does
    not go back to the old listing (no removal, no event)."""
    async with Running(rig):
        await subscribed(rig)
        rig.items = 4
        old = rig.publish_locally()
        rig.items = 5
        new = rig.publish_locally()
        await hub_call(rig.hub.publish, rig.topic, old)
        await hub_call(rig.hub.publish, rig.topic, new)
        await until(lambda: len(rig.receiver.received) == 2)
        before = changes(rig)
        [replay] = await hub_call(rig.hub.publish, rig.topic, old)
        await until(lambda: len(rig.receiver.received) == 2)
    assert replay.status == 202
    assert len(rig.pushed()) == 2 and changes(rig) == before
    assert [r.json["kind"] for r in rig.receiver.received] == ["new", "new"]
    row = rig.row()
    assert row["deliveries"] == 2 and row["rejected"] == 1 and "replay" in row["last_error"]


async def test_any_node_answers_the_hub(
    tmp_path: Path, server: TestServer, hub: Hub, receiver: WebhookReceiver
) -> None:
    """Two daemons on one PostgreSQL database: the hub verifies at one node's endpoint and
    delivers at the other's; the delivery is stored once and sent to the sink once."""
    rig = Rig(Harness(tmp_path, server, pg.server().fresh()), hub, receiver)
    rig.publish_locally()
    rig.write()
    node_a = rig.harness.config()
    rig.listen_port = free_port()  # the same public callback, another node's endpoint
    rig.write()
    node_b = rig.harness.config()
    async with Running(rig, node_a), Running(rig, node_b):
        await subscribed(rig)
        at_b = hub.requests[0]["hub.callback"].replace(f":{rig.port}/", f":{rig.listen_port}/")
        rig.items = 4
        body = rig.publish_locally()
        [sub] = hub.subscribers(rig.topic)
        sent = await hub_call(hub.deliver, at_b, body, topic=rig.topic, secret=sub.secret)
        await until(lambda: len(receiver.received) == 1)
        await asyncio.sleep(0.3)  # time for a second copy, if there were one
    assert sent.status == 202
    assert len(rig.pushed()) == 1 and len(receiver.received) == 1
    assert len(hub.requests) == 1  # one node asked, once
