"""Evolving articles (kind = "page") polled through the real pipeline over HTTP."""

from __future__ import annotations

import pytest

from aggregator import config as config_mod
from aggregator.errors import ConfigError
from tests import liveblog_story as story
from tests.conftest import Harness

ARTICLE = "https://news.example/world/antalya-talks"


def serve_page(harness: Harness, epoch: int, noise: int | None = None) -> None:
    body = story.talks_page(epoch, noise)
    harness.server.serve("/talks.html", body, content_type="text/html; charset=utf-8")


def history(harness: Harness) -> list[tuple[str, str, str | None]]:
    return [
        (r["kind"], r["fields"], r["edit"])
        for r in harness.rows("SELECT kind, fields, edit FROM changes ORDER BY id")
    ]


def test_article_epochs_give_exactly_the_expected_versions(harness: Harness) -> None:
    """Noise makes no version; appended paragraphs and rewrites are told apart."""
    harness.add("talks", "/talks.html", kind="page")
    expected = [
        [("new", "[]", None)],
        [],  # relative time, view counter, CSRF token, ad slot, related list, entities, spaces
        [("changed", '["content"]', "appended")],
        [("changed", '["title", "content"]', "edited")],
        [("changed", '["title"]', None)],
    ]
    seen = 0
    for epoch, want in enumerate(expected):
        serve_page(harness, epoch)
        [result] = harness.poll()
        assert result.ok, result.error
        assert history(harness)[seen:] == want, f"epoch {epoch}"
        seen += len(want)
    versions = harness.rows(
        "SELECT version, title, author, published_at, content_text FROM versions ORDER BY version"
    )
    assert [v["title"] for v in versions] == [
        story.TALKS_HEADLINES[0],
        story.TALKS_HEADLINES[0],
        story.TALKS_HEADLINES[1],
        story.TALKS_HEADLINES[2],
    ]
    assert versions[0]["content_text"] == "\n\n".join(story.OPENING)
    assert versions[1]["content_text"] == "\n\n".join(story.OPENING + story.ADDED)
    assert {(v["author"], v["published_at"]) for v in versions} == {
        ("Staff reporter", "2022-03-10 07:00:00.000")
    }


def test_entry_is_keyed_by_url_and_links_to_the_canonical(harness: Harness) -> None:
    """The page is one entry keyed by its URL, its link the page's rel=canonical."""
    harness.add("talks", "/talks.html", kind="page")
    serve_page(harness, 0)
    harness.poll()
    [entry] = harness.rows("SELECT key, url, title FROM entries")
    assert entry == {
        "key": harness.server.url("/talks.html"),
        "url": ARTICLE,
        "title": story.TALKS_HEADLINES[0],
    }


def test_repeated_noise_never_makes_a_version(harness: Harness) -> None:
    """Ten requests differing only in volatile text leave one version."""
    harness.add("talks", "/talks.html", kind="page")
    for noise in range(10):
        serve_page(harness, 0, noise)
        [result] = harness.poll()
        assert result.ok, result.error
    assert harness.rows("SELECT count(*) AS n FROM versions") == [{"n": 1}]


def test_ignore_patterns_remove_site_specific_volatile_text(harness: Harness) -> None:
    """A configured ignore regex keeps a per-request counter out of the comparison."""
    harness.add("talks", "/talks.html", kind="page", ignore=[r"Request id \w+"])
    for noise in range(3):
        body = story.talks_page(0, noise).replace(
            "before the meeting began.", f"before the meeting began. Request id r{noise}x"
        )
        harness.server.serve("/talks.html", body, content_type="text/html")
        harness.poll()
    assert harness.rows("SELECT count(*) AS n FROM versions") == [{"n": 1}]


def test_scope_selects_the_article_and_a_missing_scope_is_an_error(harness: Harness) -> None:
    """scope limits extraction to one element; a scope that matches nothing fails clearly."""
    harness.add("scoped", "/talks.html", kind="page", scope=".story-body")
    harness.add("wrong", "/talks.html", kind="page", scope="#no-such-thing")
    serve_page(harness, 2)
    results = {r.source: r for r in harness.poll()}
    assert results["scoped"].ok
    [text] = harness.rows("SELECT content_text FROM versions")
    assert text["content_text"] == "\n\n".join(story.OPENING + story.ADDED)
    assert results["wrong"].error == "scope '#no-such-thing' matched nothing on the page"
    [failing] = harness.rows("SELECT last_error FROM sources WHERE name = 'wrong'")
    assert failing["last_error"] == results["wrong"].error


def test_a_page_without_article_text_is_a_failure_not_an_empty_version(harness: Harness) -> None:
    """A page that has no main text records an error and keeps the stored version."""
    harness.add("talks", "/talks.html", kind="page")
    serve_page(harness, 0)
    harness.poll()
    harness.server.serve("/talks.html", "<html><body><nav>Home</nav></body></html>")
    [result] = harness.poll()
    assert not result.ok and "no article text found" in (result.error or "")
    assert harness.rows("SELECT count(*) AS n FROM versions") == [{"n": 1}]


def test_invalid_css_is_rejected_at_start_up(tmp_path) -> None:
    """A bad scope or post selector stops the config load, naming the key."""
    for extra, key in [
        ('kind = "page"\nscope = "div[["', "sources[0].scope"),
        ('kind = "liveblog"\nselectors = { post = "" }', "sources[0].selectors.post"),
        ('kind = "liveblog"\nselectors = { post = "a", title = "p[" }', "selectors.title"),
        ('kind = "page"\nselectors = { post = "a" }', "sources[0].selectors"),
    ]:
        path = tmp_path / "c.toml"
        path.write_text(f'[[sources]]\nurl = "https://x.example/"\n{extra}\n')
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            config_mod.load(path)


def test_readme_and_example_configs_of_html_kinds_are_valid() -> None:
    """The manual's liveblog/page/follow_links examples and the shipped example's commented
    ones load."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).parent.parent
    section = root.joinpath("docs", "sources.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    example = root.joinpath("aggregator", "config", "example.toml").read_text()
    tail = example[example.index("# A live blog") :]
    uncommented = "\n".join(
        line[2:]
        for line in tail.splitlines()
        if (line.startswith("# ") and "=" in line) or line.startswith("# [")
    )
    kinds = []
    for text in [*blocks, uncommented]:
        config = config_mod.parse(tomllib.loads(text))
        kinds += [s.kind for s in config.sources]
    assert kinds.count("liveblog") == 3 and kinds.count("page") == 2 and kinds.count("feed") == 2
