"""Diff pictures delivered: Apprise and email attach them, webhooks link to them, jsonl saves them,
and ``aggregator serve`` draws them on demand behind a download link."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen
from xml.sax.saxutils import escape

import pytest
from aiosmtpd.controller import Controller
from PIL import Image

from aggregator.digest.card import DELETED_BG, INSERTED_BG
from tests.browserrig import require_chromium
from tests.conftest import Harness
from tests.receivers import WebhookReceiver
from tests.test_notify_sinks import Inbox, free_port
from tests.webrig import WebRig, served_story

#: (title, text) per poll: a text-only edit, then a headline edit.
EDITS = [
    ("Talks begin in Antalya", "The ministers met at a hotel."),
    ("Talks begin in Antalya", "The ministers met at a hotel near the coast."),
    ("Talks end in Antalya without a deal", "The ministers met at a hotel near the coast."),
]


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()


def feed(title: str, text: str) -> str:
    """A one-item RSS feed (written for these tests)."""
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>'
        "<link>https://news.example/</link><description>d</description><item>"
        f"<title>{escape(title)}</title><link>https://news.example/talks</link>"
        '<guid isPermaLink="false">talks</guid>'
        f"<description>{escape(f'<p>{text}</p>')}</description></item></channel></rss>"
    )


def poll_edits(harness: Harness) -> None:
    harness.add("wire", "/feed.xml")
    for title, text in EDITS:
        harness.server.serve("/feed.xml", feed(title, text))
        [result] = harness.poll()
        assert result.ok, result.error


def assert_diff_picture(png: bytes) -> None:
    """A card: 1200 px wide, within bounds, with struck and inserted runs drawn."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size[0] == 1200 and 250 <= image.size[1] <= 2000
    colours = {
        image.getpixel((x, y)) for x in range(0, 1200, 3) for y in range(0, image.size[1], 3)
    }
    for colour in (DELETED_BG, INSERTED_BG):
        assert tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) in colours


@pytest.fixture(name="smtp")
def _smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def test_apprise_attaches_the_picture_of_headline_changes(harness: Harness) -> None:
    """An Apprise sink with image and headline_only: only the retitle arrives, with its card."""
    receiver = WebhookReceiver()
    try:
        url = f"json://127.0.0.1:{receiver.port}/apprise"
        harness.extra = (
            "[[sinks]]\nsend_first_listing = true\n"
            f'kind = "apprise"\nurl = "{url}"\nimage = true\nheadline_only = true\n'
            'kinds = ["changed"]\n'
        )
        poll_edits(harness)
        bodies = [r.json for r in receiver.received]
    finally:
        receiver.stop()
    assert [b["title"] for b in bodies] == ["Changed: Talks end in Antalya without a deal (wire)"]
    [attachment] = bodies[0]["attachments"]
    assert (attachment["filename"], attachment["mimetype"]) == ("diff-1-v2-v3.png", "image/png")
    assert_diff_picture(base64.b64decode(attachment["base64"]))


def test_email_attaches_the_picture(harness: Harness, smtp: tuple[Inbox, int]) -> None:
    """Each edit's email carries its card as a PNG attachment; the new story's has none."""
    inbox, port = smtp
    harness.extra = (
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "email"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        'from = "news@aggregator.test"\nto = ["reader@example.test"]\nimage = true\n'
    )
    poll_edits(harness)
    pictures = [
        [(p.get_filename(), p.get_content()) for p in m.iter_attachments()] for m in inbox.messages
    ]
    assert [[name for name, _ in p] for p in pictures] == [
        [],
        ["diff-1-v1-v2.png"],
        ["diff-1-v2-v3.png"],
    ]
    assert_diff_picture(pictures[2][0][1])


def test_webhook_links_the_picture_and_jsonl_saves_it(harness: Harness) -> None:
    """The webhook event names serve's picture URL (signed body included); jsonl saves the file."""
    receiver = WebhookReceiver()
    lines = harness.tmp / "events.jsonl"
    try:
        harness.extra = (
            "[[sinks]]\nsend_first_listing = true\n"
            f'kind = "webhook"\nurl = "{receiver.url()}"\nimage = true\n'
            'image_url = "https://news.example/agg/"\n\n'
            "[[sinks]]\nsend_first_listing = true\n"
            f'kind = "jsonl"\npath = "{lines}"\nimage = true\n'
        )
        poll_edits(harness)
        events = [r.json for r in receiver.received]
    finally:
        receiver.stop()
    assert [e.get("image") for e in events] == [
        None,
        "https://news.example/agg/story/1/diff/1-2.png",
        "https://news.example/agg/story/1/diff/2-3.png",
    ]
    saved = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [e["id"] for e in saved] == [e["id"] for e in events]
    assert "image" not in saved[0]
    folder = harness.tmp / "events-images"
    assert [e["image"] for e in saved[1:]] == [
        str(folder / "diff-1-v1-v2.png"),
        str(folder / "diff-1-v2-v3.png"),
    ]
    assert_diff_picture(Path(saved[2]["image"]).read_bytes())


@pytest.fixture(name="rig", scope="module")
def _rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebRig]:
    require_chromium()
    with served_story(tmp_path_factory.mktemp("pictures")) as rig:
        yield rig


def test_web_view_offers_each_edit_as_a_picture(rig: WebRig) -> None:
    """The story page links each edit's picture for download; it is drawn once, then cached."""
    entry = rig.entry_id("wire", "talks")
    with urlopen(f"{rig.url}/story/{entry}", timeout=30) as page:  # our loopback server
        html = page.read().decode()
    links = re.findall(r'<a class="picture" href="([^"]+)" download="([^"]+)"', html)
    assert (f"/story/{entry}/diff/1-2.png", f"diff-{entry}-v1-v2.png") in links
    with urlopen(f"{rig.url}/story/{entry}/diff/1-2.png", timeout=60) as response:
        assert response.headers["Content-Type"] == "image/png"
        png = response.read()
    assert_diff_picture(png)
    cache = rig.harness.tmp / "history-images"
    assert len(list(cache.glob("*.png"))) == 1
    with urlopen(f"{rig.url}/story/{entry}/diff/1-2.png", timeout=60) as again:
        assert again.read() == png
    assert len(list(cache.glob("*.png"))) == 1
    with pytest.raises(Exception, match="404"):
        urlopen(f"{rig.url}/story/{entry}/diff/1-9.png", timeout=30)
