"""Source management commands: add with discovery, OPML import/export, status."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from aggregator import config as config_mod
from aggregator.cli import main
from aggregator.scheduler import Daemon
from tests import story
from tests.conftest import Harness

OPML = """<?xml version="1.0"?>
<opml version="2.0"><head><title>mine</title></head><body>
  <outline text="World"><outline text="Wire" type="rss" xmlUrl="https://wire.example/rss"/>
    <outline text="Desk" type="rss" xmlUrl="https://desk.example/atom"/></outline>
  <outline text="Loose" type="rss" xmlUrl="https://loose.example/feed.json"/>
</body></opml>"""


def cli(harness: Harness, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "-c", str(harness.config_path)])
    return result.exit_code, result.output


def test_import_opml_writes_an_included_file_with_folders_as_tags(harness: Harness) -> None:
    """import-opml puts feeds in sources.d/opml.toml, folders become tags, re-import skips."""
    harness.add("existing", "/feed.xml")
    harness.config()
    opml = harness.tmp / "subs.opml"
    opml.write_text(OPML)
    code, out = cli(harness, "import-opml", str(opml))
    assert code == 0, out
    assert "imported 3 sources" in out
    config = config_mod.load(harness.config_path)
    tags = {s.name: s.tags for s in config.sources}
    assert tags == {"existing": [], "Wire": ["World"], "Desk": ["World"], "Loose": []}
    assert (harness.tmp / "sources.d" / "opml.toml").exists()
    code, out = cli(harness, "import-opml", str(opml))
    assert "nothing to import" in out
    code, out = cli(harness, "export-opml")
    assert '<outline text="World" title="World">' in out and "https://desk.example/atom" in out


def test_bad_opml_and_bad_include_are_named(harness: Harness) -> None:
    """A broken OPML file or an included file with other tables fails with the file named."""
    harness.config()
    bad = harness.tmp / "bad.opml"
    bad.write_text("<opml><body><outline")
    code, out = cli(harness, "import-opml", str(bad))
    assert code == 1 and "bad.opml: not valid OPML" in out
    (harness.tmp / "sources.d").mkdir()
    (harness.tmp / "sources.d" / "x.toml").write_text("[fetch]\ntimeout = 1\n")
    harness.config_path.write_text(
        'include = ["sources.d/*.toml"]\n' + harness.config_path.read_text()
    )
    code, out = cli(harness, "status")
    assert code == 2 and "x.toml: fetch: an included file may only hold [[sources]]" in out


def test_add_discovers_the_feed_of_an_html_page(harness: Harness) -> None:
    """add URL of a page finds its <link rel=alternate> feed, checks it, appends a source."""
    harness.config()
    page = '<html><head><link rel="alternate" type="application/rss+xml" href="/feed.xml">'
    harness.server.serve("/story", page + "</head><body>hi</body></html>", content_type="text/html")
    harness.server.serve("/feed.xml", story.rss(0))
    code, out = cli(harness, "add", harness.server.url("/story"), "--tag", "world")
    assert code == 0, out
    [source] = config_mod.load(harness.config_path).sources
    assert (source.url, source.kind, source.tags) == (
        harness.server.url("/feed.xml"),
        "feed",
        ["world"],
    )
    code, out = cli(harness, "add", harness.server.url("/feed.xml"))
    assert code == 1 and "already configured" in out


def test_add_refuses_a_page_without_a_feed(harness: Harness) -> None:
    """A page with no feed link and no live blog is refused and the config is unchanged."""
    harness.config()
    before = harness.config_path.read_text()
    harness.server.serve("/plain", "<html><body>nothing</body></html>", content_type="text/html")
    code, out = cli(harness, "add", harness.server.url("/plain"))
    assert code == 1 and "no feed or live blog found" in out and "--kind page" in out
    assert harness.config_path.read_text() == before


def test_add_kind_page_tracks_one_article_and_export_marks_it_as_a_link(
    harness: Harness,
) -> None:
    """add --kind page follows the page itself; export-opml lists it as a link, not a feed."""
    harness.config()
    article = (
        "<html><head><title>Talks end</title></head><body><article><h1>Talks end</h1>"
        + "".join(f"<p>Paragraph {i} of the report on the talks in Antalya.</p>" for i in range(6))
        + "</article></body></html>"
    )
    harness.server.serve("/report", article, content_type="text/html")
    code, out = cli(harness, "add", harness.server.url("/report"), "--kind", "page")
    assert code == 0, out
    [source] = config_mod.load(harness.config_path).sources
    assert (source.kind, source.url) == ("page", harness.server.url("/report"))
    code, out = cli(harness, "export-opml")
    assert f'type="link" url="{harness.server.url("/report")}"' in out and "xmlUrl" not in out


def test_status_reports_the_daemon_and_each_source(harness: Harness) -> None:
    """status shows the daemon's last state, the summary line and failing sources first."""
    harness.extra = '[schedule]\nstartup_spread = "0.05s"\n'
    harness.add("good", "/feed.xml", interval="0.2s")
    harness.add("bad", "/missing.xml", interval="0.2s")
    harness.server.serve("/feed.xml", story.rss(0))

    async def briefly() -> None:
        daemon = Daemon(harness.config(), handle_signals=False)
        task = asyncio.create_task(daemon.run())
        for _ in range(200):  # until the bad source has failed and the good one was stored
            await asyncio.sleep(0.05)
            if len(harness.server.hits("/missing.xml")) >= 2 and harness.server.hits("/feed.xml"):
                break
        await asyncio.sleep(0.3)
        daemon.stop()
        await task

    asyncio.run(briefly())
    code, out = cli(harness, "status")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("node ") and ": stopped, last heartbeat " in lines[0]
    assert lines[1].startswith("2 sources, 1 failing, last change ")
    assert lines[2].startswith("  bad: failing x") and "HTTP 404" in out
    assert any(line.startswith("  good: ok, next check ") for line in lines)
