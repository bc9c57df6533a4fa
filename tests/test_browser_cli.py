"""``check`` and ``add`` on a live blog whose posts appear only after its script ran."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from aggregator import config as config_mod
from aggregator.cli import main
from aggregator.cli.poll import poll_once
from tests.browserrig import SHELL, require_chromium, scripted_data
from tests.conftest import Harness


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()


def cli(harness: Harness, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "-c", str(harness.config_path)])
    return result.exit_code, result.output


@pytest.fixture(name="blog")
def _blog(harness: Harness) -> str:
    harness.server.serve("/live/", SHELL, content_type="text/html; charset=utf-8")
    harness.server.serve("/live/data.json", scripted_data(0), content_type="application/json")
    harness.config()
    return harness.server.url("/live/")


def test_check_says_the_posts_appear_only_after_rendering(harness: Harness, blog: str) -> None:
    """check --kind liveblog fails on the served HTML and names the option and the command."""
    code, out = cli(harness, "check", blog, "--kind", "liveblog")
    assert code == 1
    assert "its posts appear only after rendering" in out
    assert "rendered in Chromium it reads as liveblog (4 entries)" in out
    assert 'Set fetch = "browser"' in out
    assert f"aggregator add {blog} --kind liveblog --fetch browser" in out


def test_check_with_fetch_browser_shows_the_rendered_posts(harness: Harness, blog: str) -> None:
    """check --fetch browser lists what a browser source would store, and stores nothing."""
    code, out = cli(harness, "check", blog, "--kind", "liveblog", "--fetch", "browser")
    assert code == 0, out
    assert "(rendered in Chromium), read as liveblog: 4 entries" in out
    assert "Talks begin" in out and "nothing was stored" in out
    assert not harness.db_path.exists()


def test_add_suggests_fetch_browser_then_adds_it(harness: Harness, blog: str) -> None:
    """add finds no live blog as served, says rendering shows one; --fetch browser adds it."""
    code, out = cli(harness, "add", blog)
    assert code == 1
    assert "its posts appear only after rendering" in out
    assert f"aggregator add {blog} --fetch browser" in out
    assert config_mod.load(harness.config_path).sources == []
    code, out = cli(harness, "add", blog, "--fetch", "browser", "--name", "live")
    assert code == 0, out
    assert "added liveblog source 'live' (rendered in Chromium)" in out
    [source] = config_mod.load(harness.config_path).sources
    assert (source.kind, source.fetch) == ("liveblog", "browser")
    [result] = asyncio.run(poll_once(config_mod.load(harness.config_path)))
    assert result.ok and result.counts["new"] == 4
