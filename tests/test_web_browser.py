"""``aggregator serve`` in a real browser: headless Chromium driven by Playwright.

What a reader sees: a story's headline history and its word diffs, a change appearing
while the page is open, hostile feed titles shown as text (no dialog), search finding
text since edited out. One browser for the module. Where no Chromium is installed the
tests skip with the reason, except in CI (``CI`` set), where they fail: a skipped browser
test would hide a regression. Set ``UPDATE_SCREENSHOT=1`` to rewrite the README's
screenshot (docs/screenshot-story.png) from this run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import story
from tests.conftest import Harness
from tests.webrig import HOSTILE_TITLE, ROOT, WebRig, served_story, start_serve, stop_serve

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot-story.png"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _no_browser_reason() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (python3 -m pip install -e '.[test]')"
    return None


@pytest.fixture(name="browser", scope="module")
def _browser() -> Iterator[Any]:
    reason = _no_browser_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(name="rig", scope="module")
def _rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebRig]:
    with served_story(tmp_path_factory.mktemp("webui")) as rig:
        yield rig


@pytest.fixture(name="page")
def _page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 900, "height": 1000})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def test_story_shows_headline_history_and_word_diffs(
    rig: WebRig, page: Any, tmp_path: Path
) -> None:
    """The retitle and the rewritten sentence are visible as struck and inserted words."""
    page.goto(f"{rig.url}/story/{rig.entry_id('wire', 'talks')}")
    history = page.locator("section.headlines")
    assert "Foreign ministers meet in Antalya" in history.inner_text()
    assert "no progress" in history.locator("ins").all_inner_texts()[0]
    events = page.locator("#events")
    assert "no progress" in " ".join(events.locator("ins").all_inner_texts())
    deleted = " ".join(events.locator("del").all_inner_texts())
    assert "Foreign ministers meet in Antalya for first talks since the invasion" in deleted
    assert "produced no breakthrough" in " ".join(events.locator("ins").all_inner_texts())
    shot = tmp_path / "story.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    assert page.errors == []


def test_hostile_titles_show_as_text_and_open_no_dialog(rig: WebRig, page: Any) -> None:
    """A feed title carrying <script>/onerror= and a javascript: link run nothing."""
    evil = rig.entry_id("evil", "evil-1")
    for path in ("/", f"/story/{evil}", f"/story/{evil}/v/1", "/search?q=alert"):
        page.goto(rig.url + path)
        page.wait_for_timeout(300)
        assert page.dialogs == [], path
    page.goto(f"{rig.url}/story/{evil}")
    assert page.locator("h1").inner_text() == HOSTILE_TITLE
    assert page.locator("a.original").count() == 0  # the javascript: link is not a link
    page.goto(rig.url + "/")
    assert page.get_by_text(HOSTILE_TITLE).count() >= 1
    assert page.dialogs == [] and page.errors == []


def test_search_finds_text_since_edited_out(rig: WebRig, page: Any) -> None:
    """Searching the first headline's words finds the story's version 1, marked as gone."""
    page.goto(rig.url + "/")
    page.fill("header input[name=q]", "ministers invasion")
    page.click("header button[type=submit]")
    result = page.locator("ol.results > li").first
    assert "Talks end with 'no progress' towards ceasefire" in result.locator("h2").inner_text()
    assert "no longer in the current version" in result.inner_text()
    assert {m.lower() for m in result.locator("mark").all_inner_texts()} >= {"invasion"}
    result.locator("a", has_text="v1").click()
    assert "Version 1 of 3" in page.locator("h1").inner_text()


def test_a_new_change_appears_without_a_reload(rig: WebRig, page: Any) -> None:
    """With the changes page, a story and a live blog open, a poll's changes show up in all."""
    page.goto(rig.url + "/")
    page.wait_for_selector("#live-status:has-text('live')")
    page.evaluate("window.notReloaded = true")
    top = page.locator("#changes > li").count()
    story = page.context.new_page()
    story.goto(f"{rig.url}/story/{rig.entry_id('wire', 'corridors')}")
    story.wait_for_selector("#live-status:has-text('live')")
    before = story.locator("#events > li").count()
    blog = page.context.new_page()
    blog.goto(f"{rig.url}/story/{rig.entry_id('blog', 'page')}")
    blog.wait_for_selector("#live-status:has-text('live')")
    post_events = blog.locator("#posts li.event").count()
    with ThreadPoolExecutor(1) as pool:  # Playwright's loop owns this thread
        pool.submit(rig.advance, 3).result()  # "corridors" comes back: restored
    restored = page.locator("#changes > li.kind-restored", has_text="Humanitarian corridors")
    restored.wait_for(timeout=8000)
    ids = [
        int(i) for i in page.locator("#changes > li").evaluate_all("l => l.map(e => e.dataset.id)")
    ]
    assert ids == sorted(ids, reverse=True) and len(ids) > top  # new rows on top, newest first
    assert page.evaluate("window.notReloaded") is True
    story.locator("#events > li.kind-restored").wait_for(timeout=8000)
    assert story.locator("#events > li").count() == before + 1
    blog.locator("#posts li.event").nth(post_events).wait_for(timeout=8000)  # a post changed


LONG_NAME = (
    "news.example.org/world/live/2026/11/28/the-ceasefire-talks-in-antalya-continue-into-a"
    "-third-day-with-no-agreement-in-sight/feed.xml"
)


@pytest.fixture(name="many_sources")
def _many_sources(harness: Harness, tmp_path: Path) -> Iterator[str]:
    """`aggregator serve` over sources with long names, one of them failing twice."""
    harness.server.serve("/feed.xml", story.rss(0))
    harness.add(LONG_NAME, "/feed.xml")
    harness.add(LONG_NAME.replace("feed.xml", "broken.xml"), "/missing.xml")
    for name in ("wire", "world", "markets"):
        harness.add(name, "/feed.xml")
    with ThreadPoolExecutor(1) as pool:  # Playwright's loop runs on this thread
        for _ in range(2):
            pool.submit(harness.poll).result()
    proc, url = start_serve(["--db", str(harness.db_path), "--port", "0"], tmp_path / "err")
    try:
        yield url
    finally:
        stop_serve(proc)


def test_sources_page_fits_a_laptop_screen_and_lists_each_source_once(
    browser: Any, many_sources: str
) -> None:
    """At 1280 px the sources table uses the width, long names wrap, the stories column is
    on screen without scrolling sideways, and a failing source is listed once, counted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{many_sources}/sources")
        wraps = page.eval_on_selector_all(
            ".table-wrap", "els => els.map(e => [e.scrollWidth, e.clientWidth])"
        )
        assert wraps and all(scroll <= client for scroll, client in wraps), wraps
        main_width = page.eval_on_selector("main", "e => e.getBoundingClientRect().width")
        assert main_width > 1100, main_width
        for header in page.locator("th", has_text="stories").all():
            box = header.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1280, box
        names = page.locator("td.name a").all_inner_texts()
        assert sorted(names) == sorted(set(names)) and len(names) == 5, names
        broken = LONG_NAME.replace("feed.xml", "broken.xml")
        row = page.locator("tr", has=page.locator(f'td.name a:text-is("{broken}")'))
        assert row.locator("td.num").last.inner_text() == "0"  # counted, not "—"
        assert page.locator("h1", has_text="Failing now").count() == 1
    finally:
        context.close()
