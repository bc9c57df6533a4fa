"""WebSub push end to end: the daemon against a hub written to the spec (tests/hub.py).

Subscription, verification, delivery within a second, renewal, expiry and denial
(polling resumes), a hub gone silent, restarts, and push turned off. Every test runs on
SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import itertools
import socket
import time

import pytest
from click.testing import CliRunner

from aggregator.cli import main
from aggregator.timeutil import from_db, utcnow
from tests import websubrig
from tests.websubrig import Rig, Running, feed, hub_call, subscribed, until

BACKENDS = ("sqlite", "postgresql")
_hub, _receiver, _rig = websubrig._hub, websubrig._receiver, websubrig._rig  # fixtures


async def test_subscribes_with_a_secret_and_answers_the_verification(rig: Rig) -> None:
    """The first poll finds the hub; the daemon asks it with a fresh secret and an
    unguessable callback, echoes the hub's challenge, and the source waits for the
    safety poll."""
    async with Running(rig):
        await subscribed(rig)
        [request] = rig.hub.requests
        [verification] = rig.hub.verifications
    assert request["hub.mode"] == "subscribe" and request["hub.topic"] == rig.topic
    token = request["hub.callback"].removeprefix(rig.callback + "/")
    assert len(token) >= 40 and "/" not in token
    assert len(request["hub.secret"]) == 64 and int(request["hub.secret"], 16)
    assert verification.echoed and verification.status == 200
    row = rig.row()
    assert row["secret"] == request["hub.secret"] and row["token"] == token
    assert row["lease_seconds"] == rig.hub.lease_seconds
    [source] = rig.harness.rows("SELECT next_check_at, schedule_reason FROM sources")
    wait = (from_db(source["next_check_at"]) - utcnow()).total_seconds()
    assert 3000 < wait <= 3600  # the safety poll, 1 h by default
    assert source["schedule_reason"] == "push: safety poll"
    assert rig.feed_hits() == 1


async def test_a_signed_delivery_is_stored_and_sent_within_a_second(rig: Rig) -> None:
    """A change the hub pushes is stored (its fetches row says push) and reaches the
    webhook sink within 1 s, with no poll of the feed in between."""
    async with Running(rig):
        await subscribed(rig)
        polls = rig.feed_hits()
        rig.items = 4
        body = rig.publish_locally()
        [delivery] = await hub_call(rig.hub.publish, rig.topic, body)
        assert delivery.status == 202
        await until(lambda: len(rig.receiver.received) >= 1, 1.0)
        sent = time.time() - delivery.sent_at
        [fetch] = rig.pushed()
        assert rig.feed_hits() == polls
    assert sent < 1.0
    assert fetch["outcome"] == "changed" and fetch["changes"] == 1
    [event] = [r.json for r in rig.receiver.received]
    assert event["type"] == "change" and event["kind"] == "new"


async def test_renews_before_the_lease_ends_with_a_new_secret(rig: Rig) -> None:
    """With a 2 s lease the daemon asks again at 80 % of it, with a new secret; once the hub
    verifies, deliveries signed with the old secret are ignored, the new one's stored."""
    rig.hub.lease_seconds = 2
    async with Running(rig):
        await subscribed(rig)
        first = rig.hub.requests[0]["hub.secret"]
        verified = time.time()
        await until(lambda: sum(v.echoed for v in rig.hub.verifications) >= 2, 5)
        renewed = time.time() - verified
        second = rig.hub.requests[1]
        await until(lambda: rig.row()["secret"] == second["hub.secret"])
        callback = second["hub.callback"]
        rig.items = 4
        body = rig.publish_locally()
        old = await hub_call(rig.hub.deliver, callback, body, topic=rig.topic, secret=first)
        assert old.status == 202 and rig.pushed() == []
        [new] = await hub_call(rig.hub.publish, rig.topic, body)
        assert new.status == 202
        await until(lambda: len(rig.pushed()) == 1)
    assert 1.2 < renewed < 2.0  # before the lease ended
    assert second["hub.mode"] == "subscribe" and second["hub.secret"] != first
    assert callback == rig.hub.requests[0]["hub.callback"]  # the same subscription, renewed
    assert rig.row()["rejected"] == 1


async def test_a_lapsed_lease_puts_the_source_back_on_polling(rig: Rig) -> None:
    """When the hub refuses the renewal, the subscription expires with its lease and the
    feed is polled again at its interval."""
    rig.hub.lease_seconds = 2
    async with Running(rig):
        await subscribed(rig)
        rig.hub.refuse = 503
        polls = rig.feed_hits()
        await until(lambda: rig.row()["state"] == "expired", 5)
        lapsed = time.time()
        await until(lambda: rig.feed_hits() >= polls + 3, 5)
        resumed = [h.at for h in rig.harness.server.hits("/feed.xml")][polls:]
    assert resumed[0] - lapsed < 1.0  # due at once when the lease lapsed
    assert resumed[2] - resumed[1] < 1.6  # then at the 1 s interval
    row = rig.row()
    assert "lapsed" in row["last_error"] or "HTTP 503" in row["last_error"]
    assert any(r["hub.mode"] == "subscribe" for r in rig.hub.requests[1:])  # renewal asked


async def test_a_denial_puts_the_source_back_on_polling(rig: Rig) -> None:
    """A hub that denies the subscription (hub.mode=denied) gets its denial acknowledged;
    the source stays on its polling and the hub is asked again later."""
    rig.hub.deny = True
    async with Running(rig):
        await until(lambda: rig.harness.rows("SELECT state FROM websub") == [{"state": "denied"}])
        polls = rig.feed_hits()
        await until(lambda: rig.feed_hits() >= polls + 2, 5)
    denials = rig.hub.verifications
    assert denials and all(d.mode == "denied" and d.status == 200 for d in denials)
    assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(denials))  # retry = "1s"
    row = rig.row()
    assert row["last_error"] == "denied by the hub: no thanks" and row["secret"] is None
    assert rig.hub.subscriptions == {}


async def test_a_silent_hub_hands_the_source_back_to_polling(rig: Rig) -> None:
    """A safety poll that finds a change the hub never pushed makes the subscription silent
    (polled at the interval); the hub's next delivery makes it live again."""
    rig.interval, rig.websub = "0.3s", 'safety_poll = "1.5s"'
    rig.write()
    async with Running(rig):
        await subscribed(rig)
        rig.items = 4
        rig.publish_locally()  # changed, but the hub says nothing
        await until(lambda: rig.row()["state"] == "silent", 5)
        polls = rig.feed_hits()
        await until(lambda: rig.feed_hits() >= polls + 3, 3)  # at the 0.3 s interval
        rig.items = 5
        await hub_call(rig.hub.publish, rig.topic, rig.publish_locally())
        await until(lambda: rig.row()["state"] == "active")
    assert rig.row()["deliveries"] == 1


async def test_subscriptions_survive_a_restart(rig: Rig) -> None:
    """A restarted daemon keeps its subscription (no new request, no start-up poll of the
    pushed feed) and stores the hub's next delivery."""
    async with Running(rig):
        await subscribed(rig)
    polls = rig.feed_hits()
    async with Running(rig):
        rig.items = 4
        [delivery] = await hub_call(rig.hub.publish, rig.topic, rig.publish_locally())
        await until(lambda: len(rig.pushed()) == 1)
        await until(lambda: len(rig.receiver.received) == 1)
    assert delivery.status == 202
    assert len(rig.hub.requests) == 1 and rig.feed_hits() == polls
    assert rig.row()["state"] == "active"


async def test_without_a_callback_nothing_is_asked_and_sources_says_why(rig: Rig) -> None:
    """With no [websub] callback the hub is recorded but never asked, no endpoint listens,
    the feed is polled at its interval, and `sources` says why push is off."""
    rig.with_callback = False
    rig.write()
    async with Running(rig):
        await until(lambda: rig.feed_hits() >= 3, 5)
    assert rig.hub.requests == []
    row = rig.row()
    assert row["state"] == "discovered" and row["next_action_at"] is None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", rig.port), timeout=1):
        pass
    listed = CliRunner().invoke(main, ["sources", "--config", str(rig.harness.config_path)])
    assert listed.exit_code == 0, listed.output
    assert f"news: push off: {rig.hub.url} offers it, but no [websub] callback is set" in (
        listed.output
    )
    assert "push (WebSub): off for every source: no [websub] callback is set" in listed.output


async def test_push_off_unsubscribes_and_polls_again(rig: Rig) -> None:
    """Setting push = "off" (and reloading) unsubscribes at the hub, which verifies it;
    the source is polled at its interval, and the old callback answers 410."""
    async with Running(rig) as daemon:
        await subscribed(rig)
        callback = rig.hub.requests[0]["hub.callback"]
        rig.push = "off"
        rig.write()
        await daemon.reload()
        await until(lambda: rig.row()["state"] == "off", 5)
        polls = rig.feed_hits()
        await until(lambda: rig.feed_hits() >= polls + 2, 4)
        late = await hub_call(rig.hub.deliver, callback, b"<rss/>", topic=rig.topic, secret="x")
    assert [r["hub.mode"] for r in rig.hub.requests] == ["subscribe", "unsubscribe"]
    assert rig.hub.verifications[-1].mode == "unsubscribe" and rig.hub.verifications[-1].echoed
    assert rig.hub.subscriptions == {}
    assert late.status == 410 and rig.pushed() == []


async def test_a_hub_in_the_link_headers_is_asked_before_the_documents(rig: Rig) -> None:
    """When the feed's response has Link headers naming a hub and self, that hub is asked
    for that topic, not the hub the document names."""
    topic = rig.harness.server.url("/canonical.xml")
    body = rig.publish_locally().replace(rig.hub.url.encode(), b"http://127.0.0.1:9/dead-hub")
    rig.harness.server.serve(
        "/feed.xml", body, headers={"Link": f'<{rig.hub.url}>; rel="hub", <{topic}>; rel="self"'}
    )
    async with Running(rig):
        await until(lambda: bool(rig.hub.subscribers(topic)))
    [request] = rig.hub.requests
    assert request["hub.topic"] == topic
    assert rig.row()["hub"] == rig.hub.url


async def test_a_push_of_only_what_is_new_removes_nothing(rig: Rig) -> None:
    """A hub may push a diff (WebSub 7): a body listing the new item and the oldest one
    adds the new item and takes none of those left out as removed (a poll would)."""
    async with Running(rig):
        await subscribed(rig)
        rig.items = 4
        rig.publish_locally()
        diff = feed(rig.hub.url, rig.topic, 4, only=[4, 1])
        [delivery] = await hub_call(rig.hub.publish, rig.topic, diff)
        await until(lambda: len(rig.receiver.received) == 1)
    assert delivery.status == 202
    kinds = [r["kind"] for r in rig.harness.rows("SELECT kind FROM changes ORDER BY id")]
    assert kinds == ["new", "new", "new", "new"]
    assert rig.harness.rows("SELECT count(*) AS n FROM entries WHERE removed_at IS NULL") == [
        {"n": 4}
    ]
