"""Each sink kind against a real receiver: jsonl file, stdout, SMTP (aiosmtpd), Apprise json://."""

from __future__ import annotations

import email
import email.policy
import json
import re
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from aggregator import config as config_mod
from aggregator.errors import ConfigError
from aggregator.store import Store
from tests import story
from tests.conftest import Harness
from tests.receivers import WebhookReceiver

DIGEST = {
    "id": "digest-2022-03-10",
    "type": "digest",
    "title": "World news: 4 stories changed",
    "text": "Talks end with 'no progress' towards ceasefire",
    "html": "<h1>World news</h1><p>Talks end with 'no progress'</p>",
    "since": "2022-03-10 00:00:00.000",
    "until": "2022-03-11 00:00:00.000",
}


class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="smtp")
def _smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def poll_epochs(harness: Harness, *epochs: int) -> None:
    for epoch in epochs:
        harness.server.serve("/feed.xml", story.rss(epoch))
        harness.poll()


def add_digest(harness: Harness) -> None:
    store = Store.open(harness.db_path)
    try:
        store.add_event(DIGEST)
    finally:
        store.close()


def test_jsonl_appends_each_event_once_and_survives_rotation(harness: Harness) -> None:
    """jsonl gets one JSON object per line, in order, and writes a new file after a rename."""
    out = harness.tmp / "events" / "changes.jsonl"
    harness.add("world", "/feed.xml")
    harness.extra = f'[[sinks]]\nsend_first_listing = true\nkind = "jsonl"\npath = "{out}"\n'
    poll_epochs(harness, 0)
    out.rename(out.with_suffix(".1"))
    poll_epochs(harness, 1)
    add_digest(harness)
    poll_epochs(harness, 2)
    first = [json.loads(x) for x in out.with_suffix(".1").read_text().splitlines()]
    second = [json.loads(x) for x in out.read_text().splitlines()]
    assert [e["kind"] for e in first] == ["new", "new", "new"]
    assert [e.get("kind", e["type"]) for e in second] == [
        "new", "changed", "changed", "digest", "changed", "removed",
    ]  # fmt: skip
    talks = second[1]
    assert talks["title"] == {"before": story.TALKS.title, "after": story.TALKS_1.title}
    assert talks["fields"] == ["title"] and talks["version"] == {"before": 1, "after": 2}
    assert talks["source"]["name"] == "world" and talks["entry"]["key"] == "talks"
    assert "{+" in talks["diff"] and talks["words_changed"] > 0
    assert second[3] == DIGEST


def test_stdout_prints_one_line_per_event(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdout prints a readable line per change and a digest's title and text."""
    harness.add("world", "/feed.xml")
    harness.extra = '[[sinks]]\nsend_first_listing = true\nkind = "stdout"\n'
    poll_epochs(harness, 0)
    add_digest(harness)
    poll_epochs(harness, 1)
    log_line = re.compile(r"\[(debug|info|warning|error)\s*\]")
    out = [x for x in capsys.readouterr().out.splitlines() if not log_line.search(x)]
    assert f"New: {story.TALKS.title} (world) {story.TALKS.link}" in out[0]
    assert out[3:5] == [DIGEST["title"], DIGEST["text"]]
    assert any(f"Changed: {story.TALKS_1.title} (world)" in line for line in out[5:])


def test_email_subjects_threads_and_digest_alternative(
    harness: Harness, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Email names story and kind, carries the word diff, threads per story, digests have HTML."""
    inbox, port = smtp
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "not-used-without-auth")
    harness.add("world", "/feed.xml")
    harness.extra = (
        "[[sinks]]\nsend_first_listing = true\nconcurrency = 1\n"  # one message at a time
        f'kind = "email"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        'password_env = "TEST_SMTP_PASSWORD"\nfrom = "news@aggregator.test"\n'
        'to = ["reader@example.test"]\n'
    )
    poll_epochs(harness, 0, 1)
    add_digest(harness)
    poll_epochs(harness, 2)
    subjects = [m["Subject"] for m in inbox.messages]
    assert subjects[0] == f"New: {story.TALKS.title} (world)"
    assert f"Changed: {story.TALKS_1.title} (world)" in subjects
    new_talks = inbox.messages[0]
    changes = [m for m in inbox.messages if m["Subject"].startswith("Changed: Talks end")]
    assert len(changes) == 2
    for msg in changes:
        assert msg["In-Reply-To"] == new_talks["Message-ID"] == msg["References"]
        assert msg["Message-ID"] != new_talks["Message-ID"]
    body = changes[0].get_body(("plain",)).get_content()
    assert "[-Foreign ministers meet in Antalya for first talks since the invasion-]" in body
    digest = next(m for m in inbox.messages if m["Subject"] == DIGEST["title"])
    assert digest.get_body(("html",)).get_content().strip() == DIGEST["html"]
    assert digest.get_body(("plain",)).get_content().strip() == DIGEST["text"]


def test_apprise_posts_to_a_local_json_endpoint(harness: Harness) -> None:
    """The apprise sink sends subject and text through a json:// URL to a local receiver."""
    receiver = WebhookReceiver()
    try:
        harness.add("world", "/feed.xml")
        url = f"json://127.0.0.1:{receiver.port}/apprise"
        harness.extra = (
            f'[[sinks]]\nsend_first_listing = true\nkind = "apprise"\nurl = "{url}"\n'
            'kinds = ["changed"]\n'
        )
        poll_epochs(harness, 0, 1)
        bodies = [r.json for r in receiver.received]
    finally:
        receiver.stop()
    assert sorted(b["title"] for b in bodies) == sorted(  # two stories: sent side by side
        [f"Changed: {story.TALKS_1.title} (world)", f"Changed: {story.CORRIDORS.title} (world)"]
    )
    talks = next(b for b in bodies if story.TALKS_1.title in b["title"])
    assert story.TALKS_1.link.split("?")[0] in talks["message"]


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({"kind": "webhook"}, "sinks[0].url: required key for sink kind 'webhook' is missing"),
        (
            {"kind": "webhook", "url": "http://h/x", "secert": "x"},
            "sinks[0].secert: unknown key for sink kind 'webhook'",
        ),
        ({"kind": "pager"}, "sinks[0].kind: unknown sink kind 'pager'"),
        ({"kind": "stdout", "kinds": ["edited"]}, "sinks[0].kinds: unknown kind 'edited'"),
        ({"kind": "stdout", "quiet_hours": "22-7"}, "sinks[0].quiet_hours"),
        ({"kind": "apprise", "url": "nonsense://x"}, "not a URL Apprise understands"),
        ({"kind": "email", "host": "h", "from": "a@b", "to": ["c@d"], "port": "x"}, ".port:"),
    ],
)
def test_bad_sink_config_names_file_key_and_problem(
    tmp_path: Path, sink: dict[str, Any], message: str
) -> None:
    """A wrong sink table stops at load with the file, the key path and what is wrong."""
    with pytest.raises(ConfigError) as err:
        config_mod.parse({"sinks": [sink]}, "my.toml")
    assert str(err.value).startswith("my.toml: ")
    assert message in str(err.value)


def test_duplicate_sink_names_are_refused() -> None:
    """Two sinks with the same name are an error naming both."""
    sinks = [{"kind": "stdout"}, {"kind": "stdout"}]
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.name: duplicate name 'stdout'"):
        config_mod.parse({"sinks": sinks}, "my.toml")


def test_add_event_stores_the_payload_as_given(tmp_path: Path) -> None:
    """Store.add_event writes an outbox row with the payload unchanged (used for digests)."""
    store = Store.open(tmp_path / "x.db")
    try:
        store.add_event(DIGEST)
        row = store.db.execute("SELECT event_id, type, payload FROM outbox").fetchone()
    finally:
        store.close()
    assert row[:2] == ("digest-2022-03-10", "digest") and json.loads(row[2]) == DIGEST


def test_a_sink_whose_secret_variable_is_unset_is_reported_at_start(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook naming an unset secret_env is logged as an error when delivery starts."""
    import structlog

    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    harness.add("world", "/feed.xml")
    harness.extra = (
        '[[sinks]]\nsend_first_listing = true\nkind = "webhook"\nname = "hook"\nurl = "http://127.0.0.1:9/hook"\n'
        'secret_env = "NO_SUCH_SECRET"\n'
    )
    harness.server.serve("/feed.xml", story.rss(0))
    with structlog.testing.capture_logs() as logs:
        harness.poll()
    [line] = [entry for entry in logs if entry["event"] == "sink.env_missing"]
    assert (line["sink"], line["variable"]) == ("hook", "NO_SUCH_SECRET")
