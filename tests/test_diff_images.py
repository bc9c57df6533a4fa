"""Diff pictures checked as pictures: where the struck and inserted colours fall, and the size.

Each card is drawn by the real Chromium. Where the diff says a run was deleted or
inserted, the card's layout (read from the same page in Chromium) gives the run's boxes,
and the PNG's pixels inside each box must be mostly that run's background colour;
nowhere else in the picture may those colours appear.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from click.testing import CliRunner
from PIL import Image

from aggregator.cli import main
from aggregator.config import BrowserConfig
from aggregator.diff import tokens
from aggregator.digest.card import DELETED_BG, INSERTED_BG, Card, card_html
from aggregator.digest.image import DiffImages, ImageSettings
from tests.browserrig import require_chromium
from tests.conftest import Harness
from tests.server import TestServer

WIDTH, MAX_HEIGHT = 1200, 2000
BOXES = """JSON.stringify(["h1", ".text"].map(sel => {
  const part = document.querySelector(sel), box = part.getBoundingClientRect();
  const runs = tag => [...part.querySelectorAll(tag)].map(el => ({
    text: el.textContent,
    rects: [...el.getClientRects()].map(r => [r.left, r.top, r.right, r.bottom])}));
  const more = part.querySelector(".more"), shown = more && more.getBoundingClientRect();
  return {box: [box.left, box.top, box.right, box.bottom], del: runs("del"), ins: runs("ins"),
          text: part.innerText, more: shown && [shown.left, shown.top, shown.right, shown.bottom]};
}))"""


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def draw(card: Card, tmp: Path) -> tuple[Image.Image, dict[str, Any]]:
    """The card's picture and its layout (boxes of the headline, the text and each run)."""
    import json

    settings = ImageSettings(tmp / "cache", 10**8, WIDTH, MAX_HEIGHT, BrowserConfig().settings())

    async def run() -> tuple[bytes, Any]:
        images = DiffImages(settings)
        try:
            png = await images.png(card)
            async with images.chromium.tab(javascript=False, width=WIDTH, height=1) as tab:
                await tab.set_content(card_html(card, width=WIDTH, max_height=MAX_HEIGHT))
                layout = json.loads(await tab.evaluate(BOXES))
            return png, layout
        finally:
            await images.close()

    png, layout = asyncio.run(run())
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return image, {"headline": layout[0], "text": layout[1]}


def share(image: Image.Image, rect: list[float], colour: str) -> float:
    """The share of ``rect``'s pixels that are exactly ``colour``."""
    left, top, right, bottom = (round(v) for v in rect)
    crop = image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))
    pixels = (
        list(crop.get_flattened_data())
        if hasattr(crop, "get_flattened_data")
        else list(crop.getdata())
    )
    return sum(p == rgb(colour) for p in pixels) / max(1, len(pixels))


def coloured_rows(image: Image.Image, colour: str) -> set[int]:
    """The rows holding at least a few pixels of exactly ``colour``."""
    target, (width, height) = rgb(colour), image.size
    pixels = image.load()
    return {y for y in range(height) if sum(pixels[x, y] == target for x in range(0, width, 2)) > 3}


def assert_runs_where_the_diff_says(image: Image.Image, part: dict[str, Any]) -> None:
    """Every deleted and inserted run's boxes are filled with its colour."""
    for op, colour in (("del", DELETED_BG), ("ins", INSERTED_BG)):
        for run in part[op]:
            for rect in run["rects"]:
                assert share(image, rect, colour) > 0.4, (op, run["text"], rect)


def assert_size(image: Image.Image) -> None:
    width, height = image.size
    assert width == WIDTH and 250 <= height <= MAX_HEIGHT, image.size


def test_headline_edit_card(tmp_path: Path) -> None:
    """A retitle: red and green runs inside the headline, in reading order, none below it."""
    card = Card(
        "wire", "https://news.example/world/antalya-talks",
        "Foreign ministers meet in Antalya for first talks since the invasion",
        "Foreign ministers end talks in Antalya with no progress on a ceasefire",
        "The top diplomats of the two countries met on Thursday at a hotel near Antalya.",
        "The top diplomats of the two countries met on Thursday at a hotel near Antalya.",
        1, 2, "2022-03-10 07:00:00.000", "2022-03-10 09:12:00.000",
    )  # fmt: skip
    image, layout = draw(card, tmp_path)
    assert_size(image)
    head, text = layout["headline"], layout["text"]
    assert [r["text"] for r in head["del"]] and [r["text"] for r in head["ins"]]
    assert text["del"] == [] and text["ins"] == []
    assert_runs_where_the_diff_says(image, head)
    top, bottom = head["box"][1], head["box"][3]
    for colour in (DELETED_BG, INSERTED_BG):
        rows = coloured_rows(image, colour)
        assert rows and min(rows) >= top - 1 and max(rows) <= bottom + 1
    first_del, first_ins = head["del"][0]["rects"][0], head["ins"][0]["rects"][0]
    if abs(first_del[1] - first_ins[1]) < 5:  # on one line, left to right: struck first
        assert first_del[0] < first_ins[0]
    assert "met on Thursday" in text["text"]  # the unchanged text, shown plainly


def test_long_text_edit_card_keeps_the_changed_part(tmp_path: Path) -> None:
    """One sentence changed deep in a 60-paragraph text: the card shows it, fits, cuts the rest."""
    paragraphs = [f"Paragraph {i} reports routine detail number {i} of the day." for i in range(60)]
    edited = list(paragraphs)
    edited[45] = "Paragraph 45 now says the talks collapsed after ninety minutes."
    card = Card(
        "wire", "https://news.example/long", "Talks in Antalya", "Talks in Antalya",
        "\n\n".join(paragraphs), "\n\n".join(edited),
        3, 4, "2022-03-10 07:00:00.000", "2022-03-10 11:00:00.000",
    )  # fmt: skip
    image, layout = draw(card, tmp_path)
    assert_size(image)
    head, text = layout["headline"], layout["text"]
    assert head["del"] == [] and head["ins"] == []
    deleted = " ".join(r["text"] for r in text["del"])
    inserted = " ".join(r["text"] for r in text["ins"])
    assert "reports routine detail number" in deleted and "collapsed after ninety" in inserted
    assert "Paragraph 3 reports" not in text["text"] and "…" in text["text"]
    assert_runs_where_the_diff_says(image, text)
    for colour in (DELETED_BG, INSERTED_BG):
        rows = coloured_rows(image, colour)
        assert rows and min(rows) >= text["box"][1] - 1 and max(rows) <= text["box"][3] + 1


def test_many_changes_are_counted_past_the_budget(tmp_path: Path) -> None:
    """Every paragraph edited: the picture stays within bounds and says how many are not shown."""
    before = "\n\n".join(f"Item {i}: the minister said one thing." for i in range(80))
    after = "\n\n".join(f"Item {i}: the minister said another thing." for i in range(80))
    card = Card("wire", "https://news.example/x", "T", "T", before, after, 1, 2, "", "")
    image, layout = draw(card, tmp_path)
    assert_size(image)
    text = layout["text"]
    assert "… and 67 more changes not shown" in text["text"]
    assert text["more"][3] <= min(text["box"][3], image.size[1])  # drawn, not clipped
    assert len(text["del"]) == len(text["ins"]) == 13


def test_rtl_card_puts_the_struck_run_to_the_right(tmp_path: Path) -> None:
    """Hebrew reads right to left: the deleted run lies right of the inserted one, both coloured."""
    card = Card(
        "חדשות", "https://news.example/he", "השיחות באנטליה החלו היום",
        "השיחות באנטליה הסתיימו ללא התקדמות היום",
        "שרי החוץ נפגשו ביום חמישי במלון ליד אנטליה.",
        "שרי החוץ נפגשו ביום חמישי במלון ליד אנטליה ולא הגיעו להסכמה.",
        3, 4, "2022-03-10 07:00:00.000", "2022-03-10 09:00:00.000",
    )  # fmt: skip
    image, layout = draw(card, tmp_path)
    assert_size(image)
    head = layout["headline"]
    assert_runs_where_the_diff_says(image, head)
    assert_runs_where_the_diff_says(image, layout["text"])
    deleted, inserted = head["del"][0]["rects"][0], head["ins"][0]["rects"][0]
    assert deleted[0] > inserted[0]  # struck run starts right of the inserted one
    assert head["box"][2] - deleted[2] < 400  # and the line starts at the right edge


def test_cjk_card_diffs_characters_not_whole_sentences(tmp_path: Path) -> None:
    """Chinese text: the changed characters only are marked, drawn with a CJK font."""
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True)
    if not fonts.stdout.strip():
        reason = "no CJK font installed (apt-get install fonts-noto-cjk)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the CJK picture test: {reason}")
        pytest.skip(reason)
    assert tokens("会谈结束") == ["会", "谈", "结", "束"]
    card = Card(
        "新闻", "https://news.example/zh", "俄乌外长在安塔利亚会谈", "俄乌外长会谈结束，没有进展",
        "两国外长周四在安塔利亚附近的一家酒店开始会谈。",
        "两国外长周四在安塔利亚附近的一家酒店结束会谈，没有达成停火。",
        1, 2, "2022-03-10 07:00:00.000", "2022-03-10 09:00:00.000",
    )  # fmt: skip
    image, layout = draw(card, tmp_path)
    assert_size(image)
    text = layout["text"]
    assert [r["text"] for r in text["del"]] == ["开始"]
    assert [r["text"] for r in text["ins"]] == ["结束", "，没有达成停火"]
    assert_runs_where_the_diff_says(image, text)
    assert_runs_where_the_diff_says(image, layout["headline"])


def test_hostile_title_and_text_are_drawn_as_text(tmp_path: Path, server: TestServer) -> None:
    """Markup in a title or text shows as characters; no script runs and nothing is fetched."""
    beacon = server.url("/beacon.png")
    title = f'<script>document.title=\'pwned\'</script><img src="{beacon}" onerror="x()">Talks'
    text = f'<iframe src="{server.url("/frame")}"></iframe><style>*{{display:none}}</style>'
    card = Card("evil", "javascript:alert(1)", "Talks", title, "Calm.", text, 1, 2, "", "")
    image, layout = draw(card, tmp_path)
    assert_size(image)
    assert layout["headline"]["text"] == title  # every character, as text
    assert layout["text"]["text"].endswith(text)
    assert "javascript:" not in card_html(card)
    assert server.requests == []


def feed(title: str, text: str) -> str:
    """A one-item RSS feed (written for these tests)."""
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>'
        "<link>https://news.example/</link><description>d</description><item>"
        f"<title>{escape(title)}</title><link>https://news.example/talks</link>"
        '<guid isPermaLink="false">talks</guid>'
        f"<description>{escape(f'<p>{text}</p>')}</description></item></channel></rss>"
    )


def test_aggregator_diff_image_for_a_chosen_pair(harness: Harness) -> None:
    """`aggregator diff ENTRY --image` writes the last edit, and --from/--to a chosen pair."""
    harness.add("wire", "/feed.xml")
    texts = [
        ("Talks begin in Antalya", "The ministers met at a hotel."),
        ("Talks end in Antalya", "The ministers met at a hotel."),
        ("Talks end in Antalya", "The ministers met at a hotel and left without a deal."),
    ]
    for title, text in texts:
        harness.server.serve("/feed.xml", feed(title, text))
        harness.poll()
    runner, out = CliRunner(), harness.tmp / "last.png"
    result = runner.invoke(
        main, ["diff", "talks", "--image", str(out), "-c", str(harness.config_path)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (1200x" in result.output and "v2 → v3" in result.output
    image = Image.open(out).convert("RGB")
    assert image.size[0] == WIDTH and coloured_rows(image, INSERTED_BG)
    assert not coloured_rows(image, DELETED_BG)  # an append: nothing struck
    first = harness.tmp / "first.png"
    args = ["diff", "talks", "--from", "1", "--to", "2", "--image", str(first)]
    result = runner.invoke(main, [*args, "-c", str(harness.config_path)])
    assert result.exit_code == 0 and "v1 → v2" in result.output
    picture = Image.open(first).convert("RGB")
    assert coloured_rows(picture, DELETED_BG) and coloured_rows(picture, INSERTED_BG)
    assert len(list((harness.tmp / "history-images").glob("*.png"))) == 2  # the cache
