"""``aggregator serve`` over HTTP: every page and endpoint, its headers, escaping, feeds, JSON.

One history (the evolving story, a live blog and a hostile feed, polled into a real SQLite
file) is read by one ``aggregator serve`` subprocess for the whole module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import feedparser
import httpx
import pytest

from tests import pg
from tests.webrig import HOSTILE_TITLE, WebRig, served_story, start_serve, stop_serve


@pytest.fixture(name="rig", scope="module", params=["sqlite", "postgresql"])
def _rig(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebRig]:
    """The served story, on each backend."""
    database = pg.server().fresh() if request.param == "postgresql" else None
    with served_story(tmp_path_factory.mktemp("web"), database=database) as rig:
        yield rig


@pytest.fixture(name="client", scope="module")
def _client(rig: WebRig) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rig.url, timeout=10) as client:
        yield client


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def pages(rig: WebRig) -> list[str]:
    talks = rig.entry_id("wire", "talks")
    blog = rig.entry_id("blog", "page")
    return [
        "/",
        "/?source=wire&kind=changed&since=30d",
        "/?tag=world",
        f"/story/{talks}",
        f"/story/{talks}/v/2",
        f"/story/{blog}",
        "/sources",
        "/sources/wire",
        "/search?q=ceasefire",
    ]


def test_every_page_answers_with_a_strict_policy(rig: WebRig, client: httpx.Client) -> None:
    """Each page: 200 HTML, CSP without inline script, nosniff, referrer policy, Atom link."""
    for path in pages(rig):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        for directive in ("object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"):
            assert directive in csp, (path, directive)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        tags = Tags(response.text).tags
        feeds = [a for t, a in tags if t == "link" and a.get("type") == "application/atom+xml"]
        assert feeds and feeds[0]["rel"] == "alternate", path
        assert not [a for t, a in tags if t == "script" and a.get("src") is None], path
        assert not [t for t, a in tags if t == "style"] and not [
            a for _, a in tags if "style" in a
        ], path
    assert client.get("/story/999999").status_code == 404
    assert client.get("/?kind=sideways").status_code == 400


def test_hostile_feed_text_renders_as_text(rig: WebRig, client: httpx.Client) -> None:
    """Script, onerror and javascript: payloads from a feed stay text; no link or handler."""
    evil = rig.entry_id("evil", "evil-1")
    for path in ("/", f"/story/{evil}", f"/story/{evil}/v/1", "/search?q=alert", "/sources/evil"):
        page = client.get(path).text
        parsed = Tags(page)
        for tag, attrs in parsed.tags:
            assert not any(name.startswith("on") for name in attrs), (path, tag, attrs)
            for name in ("href", "src", "action"):
                value = (attrs.get(name) or "").strip().lower()
                assert not value.startswith(("javascript:", "data:")), (path, tag, attrs)
            assert tag not in ("svg", "img", "iframe", "object"), (path, tag)
        scripts = [a["src"] for t, a in parsed.tags if t == "script"]
        assert all(src.endswith("/static/live.js") for src in scripts), (path, scripts)
        if path != "/search?q=alert":
            assert HOSTILE_TITLE in "".join(parsed.text), path  # shown, as text


def test_atom_feed_parses_and_follows_the_filters(rig: WebRig, client: httpx.Client) -> None:
    """The Atom endpoint is a valid feed; ?source= and ?story= narrow it."""
    talks = rig.entry_id("wire", "talks")
    everything = feedparser.parse(client.get("/changes.atom").content)
    assert not everything.bozo, everything.bozo_exception
    assert len(everything.entries) >= 8
    wire = feedparser.parse(client.get("/changes.atom?source=wire").content)
    assert {e.tags[0].term for e in wire.entries} == {"wire"}
    one = feedparser.parse(client.get(f"/changes.atom?story={talks}").content)
    assert one.entries[0].title.startswith("changed: ")
    assert {e.title.split(": ", 1)[1] for e in one.entries} >= {
        "Talks end with 'no progress' towards ceasefire"
    }
    assert len(one.entries) < len(wire.entries)
    page = client.get(f"/story/{talks}").text
    assert f'href="/changes.atom?story={talks}"' in page


def test_json_endpoints_and_keyset_pages(rig: WebRig, client: httpx.Client) -> None:
    """Changes page by id (next link), stories by source, a story, a version, sources."""
    first = client.get("/api/changes?limit=3").json()
    assert len(first["changes"]) == 3 and first["next"]
    ids = [c["id"] for c in first["changes"]]
    assert ids == sorted(ids, reverse=True)
    second = client.get(first["next"]).json()
    assert max(c["id"] for c in second["changes"]) < min(ids)
    change = first["changes"][0]
    assert set(change) >= {"id", "kind", "detected_at", "source", "entry_id", "story", "edits"}
    sources = client.get("/api/sources").json()["sources"]
    assert {s["name"] for s in sources} == {"wire", "blog", "evil", "dead"}
    healthy = [s for s in sources if s["name"] != "dead"]
    assert all(s["consecutive_failures"] == 0 and s["entries"] >= 1 for s in healthy)
    stories = client.get("/api/stories?source=wire").json()["stories"]
    assert "talks" in {s["key"] for s in stories}
    talks = rig.entry_id("wire", "talks")
    one = client.get(f"/api/stories/{talks}").json()
    assert [v["version"] for v in one["versions"]] == [1, 2, 3]
    assert one["versions"][1]["title"] == "Talks end with 'no progress' towards ceasefire"
    v1 = client.get(f"/api/stories/{talks}/versions/1").json()
    assert "hotel near Antalya" in v1["content_text"] + v1["summary_text"]
    evil = client.get(f"/api/stories/{rig.entry_id('evil', 'evil-1')}/versions/1").json()
    assert evil["link"] is None and "javascript" not in evil["summary_html"]
    assert client.get("/api/stories/999999").json() == {"error": "no story 999999"}


def test_sources_page_puts_failing_sources_first_with_why(client: httpx.Client) -> None:
    """The source that answers 404 is listed under "Failing now" with its error, and only
    there: the other sources follow, the failing one not again."""
    page = client.get("/sources").text
    failing = page[page.index("Failing now") : page.index("<h1>The other sources")]
    text = " ".join("".join(Tags(failing).text).split())
    assert "dead" in text and "404" in text and "wire" not in text
    others = " ".join("".join(Tags(page[page.index("<h1>The other sources") :]).text).split())
    assert "wire" in others and "dead" not in others


def test_search_shows_text_since_edited_out(client: httpx.Client) -> None:
    """The first headline's words are only in version 1: found, and flagged as gone."""
    page = client.get("/search?q=invasion first talks").text
    text = " ".join("".join(Tags(page).text).split())
    assert "Talks end with 'no progress' towards ceasefire" in text  # the story, as titled now
    assert "no longer in the current version (v3)" in text
    assert "<mark>invasion</mark>" in page
    for odd in ('"', "\x00", "NEAR(a b)", "*"):
        assert client.get("/search", params={"q": odd}).status_code == 200, odd


def test_live_stream_pushes_a_change_stored_after_connecting(
    rig: WebRig, client: httpx.Client
) -> None:
    """/events sends a change the poller stores while the stream is open (one SSE event)."""
    talks = rig.entry_id("wire", "talks")
    newest = client.get("/api/changes?limit=1").json()["changes"][0]["id"]
    with client.stream("GET", f"/events?source=wire&after={newest}") as stream:
        lines = stream.iter_lines()
        assert next(lines) == "event: hello"
        rig.advance(3)  # "corridors" comes back: one restored change on wire
        started = time.monotonic()
        for line in lines:
            if line.startswith("data: ") and '"row"' in line:
                change = json.loads(line[6:])
                break
        else:
            pytest.fail("stream ended")
    assert time.monotonic() - started < 10
    assert change["source"] == "wire" and change["kind"] == "restored"
    assert "Humanitarian corridors" in change["row"] and change["entry_id"] != talks


def test_a_token_guards_every_request(rig: WebRig, tmp_path: Path) -> None:
    """With a token: 401 without it; Bearer works; ?token= sets a cookie and redirects.

    Served as a proxy that strips ``/news`` would see it (``--root-path /news``): links and
    the redirect carry the prefix.
    """
    token = "s3cret-token-for-tests"
    proc, url = start_serve(
        ["--db", str(rig.harness.db_path), "--port", "0", "--root-path", "/news"],
        tmp_path / "err",
        env={"AGGREGATOR_SERVE_TOKEN": token},
    )
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/api/sources").status_code == 401
            bearer = {"Authorization": f"Bearer {token}"}
            assert client.get("/api/sources", headers=bearer).status_code == 200
            assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
            first = client.get(f"/sources?token={token}")
            assert first.status_code == 303 and first.headers["location"] == "/news/sources"
            cookie = first.headers["set-cookie"]
            assert "HttpOnly" in cookie and "Path=/news" in cookie
            client.cookies.set("aggregator_token", token)  # as the browser sends it under /news
            page = client.get("/sources")
            assert page.status_code == 200
            links = {a.get("href") for t, a in Tags(page.text).tags if t in ("a", "link")}
            assert {"/news/", "/news/sources/wire", "/news/static/style.css"} <= links
    finally:
        stop_serve(proc)


def test_loopback_only_by_default(rig: WebRig, client: httpx.Client, tmp_path: Path) -> None:
    """No token: another Host is refused (DNS rebinding), and so is a public --host."""
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 421
    with pytest.raises(AssertionError, match=r"refusing to serve the history on 0\.0\.0\.0"):
        start_serve(
            ["--db", str(rig.harness.db_path), "--host", "0.0.0.0", "--port", "0"],
            tmp_path / "err",
        )
