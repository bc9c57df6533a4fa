"""Every source-management command as a new user meets it: a subprocess, a real config file,
a real database and the local server. Each test checks the exit status, the output and what
the files hold afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator import config as config_mod
from aggregator import config_edit
from aggregator.cli.poll import poll_once
from aggregator.config import FetchConfig
from aggregator.fetch import Fetcher
from tests import story
from tests.server import TestServer

ROOT = Path(__file__).resolve().parent.parent

OPML = """<?xml version="1.0"?>
<opml version="2.0"><head><title>mine</title></head><body>
  <outline text="World"><outline text="Wire" type="rss" xmlUrl="{wire}"/>
    <outline text="Old" type="rss" xmlUrl="ftp://old.example/rss"/></outline>
  <outline text="Loose" type="rss" xmlUrl="https://loose.example/feed.json"/>
</body></opml>"""

CONFIG = """\
# My news sources. Keep this comment.
include = ["sources.d/*.toml"]

[storage]
database = "history.db"   # next to this file

# The wire, polled often.
[[sources]]
name = "wire"
url = "{wire}"
interval = "5m"   # busy feed

# A quieter desk.
[[sources]]
name = "desk"
url = "{desk}"
tags = ["world"]
"""

INCLUDED = """\
# Sources from the newsroom list.
[[sources]]
name = "extra"   # keep me
url = "{extra}"
"""


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``aggregator ARGS`` as a user runs it, with no config found outside ``cwd``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    base.update(HOME=str(cwd), XDG_CONFIG_HOME=str(cwd / ".xdg"), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def newsroom(tmp: Path, server: TestServer) -> Path:
    """A commented config with two sources and an included file with a third."""
    for path in ("/wire.xml", "/desk.xml", "/extra.xml"):
        server.serve(path, story.rss(0))
    urls = {k: server.url(f"/{k}.xml") for k in ("wire", "desk", "extra")}
    (tmp / "sources.d").mkdir()
    (tmp / "sources.d" / "newsroom.toml").write_text(INCLUDED.format(**urls))
    config = tmp / "aggregator.toml"
    config.write_text(CONFIG.format(**urls))
    return config


def load(config: Path) -> config_mod.Config:
    """The config as the daemon would load it (in-process: a subprocess costs seconds)."""
    return config_mod.load(config)


def poll(config: Path) -> None:
    """One pass into the config's database, in-process (`poll` itself has its own tests)."""
    results = asyncio.run(poll_once(load(config)))
    assert all(r.ok for r in results), [r.error for r in results]


def sources_in_db(db: Path) -> dict[str, int]:
    """Each source's name and its number of entries, straight from the database."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT s.name, count(e.id) FROM sources s LEFT JOIN entries e ON e.source_id = s.id"
            " GROUP BY s.id"
        ).fetchall()
    return dict(rows)


# -- init ---------------------------------------------------------------------------------


def test_init_writes_a_valid_commented_starter_and_never_overwrites(tmp_path: Path) -> None:
    """init writes ./aggregator.toml (comments, valid); a second init refuses and names it."""
    proc = run("init", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "aggregator.toml"
    text = config.read_text()
    assert "wrote aggregator.toml" in proc.stdout and "aggregator add URL" in proc.stdout
    assert text.startswith("# aggregator configuration") and "# [[sources]]" in text
    assert load(config).sources == []

    config.write_text(text + "# mine\n")
    again = run("init", cwd=tmp_path)
    assert again.returncode == 1
    assert "aggregator.toml already exists" in again.stderr and "not overwritten" in again.stderr
    assert config.read_text() == text + "# mine\n"

    other = run("init", "--config", "etc/agg/other.toml", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "etc/agg/other.toml").read_text() == text
    assert "--config etc/agg/other.toml" in other.stdout


# -- add / import-opml: item 9 ------------------------------------------------------------


def test_add_creates_the_first_config_from_the_starter(tmp_path: Path, server: TestServer) -> None:
    """With no config anywhere, add URL writes the starter plus the source, and says so."""
    server.serve("/feed.xml", story.rss(0))
    server.serve("/plain", "<html><body>nothing here</body></html>", content_type="text/html")

    refused = run("add", server.url("/plain"), cwd=tmp_path)
    assert refused.returncode == 1 and "no feed or live blog found" in refused.stderr
    assert not (tmp_path / "aggregator.toml").exists()  # a failed add leaves nothing behind

    proc = run("add", server.url("/feed.xml"), "--name", "world", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "created aggregator.toml" in proc.stdout
    assert "added feed source 'world'" in proc.stdout
    text = (tmp_path / "aggregator.toml").read_text()
    assert text.startswith("# aggregator configuration")  # the starter's comments
    assert f'[[sources]]\nname = "world"\nurl = "{server.url("/feed.xml")}"\n' in text
    assert [s.name for s in load(tmp_path / "aggregator.toml").sources] == ["world"]


def test_import_opml_skips_an_invalid_outline_and_imports_the_rest(
    tmp_path: Path, server: TestServer
) -> None:
    """An ftp:// outline is skipped with a warning naming it; the others are imported."""
    config = newsroom(tmp_path, server)
    opml = tmp_path / "subs.opml"
    opml.write_text(OPML.format(wire=server.url("/wire.xml")))
    proc = run("import-opml", str(opml), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipped outline 'Old' (ftp://old.example/rss): not an http(s) URL" in (
        proc.stderr
    )
    assert (
        "imported 1 source into" in proc.stdout and "1 already configured, 1 skipped" in proc.stdout
    )
    imported = (tmp_path / "sources.d" / "opml.toml").read_text()
    assert "https://loose.example/feed.json" in imported and "ftp:" not in imported
    assert config.read_text().startswith("# My news sources")  # include already there
    assert [s.name for s in load(config).sources] == ["wire", "desk", "extra", "Loose"]


def test_import_opml_with_nothing_importable_fails_and_writes_nothing(tmp_path: Path) -> None:
    """Every outline invalid: exit 1, config untouched, no sources.d created."""
    (tmp_path / "aggregator.toml").write_text(config_edit.STARTER)
    before = (tmp_path / "aggregator.toml").read_text()
    opml = tmp_path / "old.opml"
    opml.write_text(
        '<opml version="2.0"><body><outline text="Old" xmlUrl="ftp://old.example/rss"/>'
        "</body></opml>"
    )
    proc = run("import-opml", "old.opml", cwd=tmp_path)
    assert proc.returncode == 1
    assert "skipped outline 'Old'" in proc.stderr and "nothing importable" in proc.stderr
    assert (tmp_path / "aggregator.toml").read_text() == before
    assert not (tmp_path / "sources.d").exists()


def test_a_refused_edit_names_no_file_as_if_it_had_been_written(tmp_path: Path) -> None:
    """When the edited config would not load, nothing is saved and a new file is 'not written'."""
    (tmp_path / "aggregator.toml").write_text(
        '# keep\n[defaults]\ninterval = "5m"\nmin_interval = "10m"\n'
    )
    before = (tmp_path / "aggregator.toml").read_text()
    opml = tmp_path / "subs.opml"
    opml.write_text(OPML.format(wire="https://wire.example/rss"))
    proc = run("import-opml", "subs.opml", cwd=tmp_path)
    assert proc.returncode == 1
    assert "sources.d/opml.toml (not written): sources[0] (source 'Wire'): min_interval" in (
        proc.stderr
    )
    assert "nothing was saved" in proc.stderr
    assert (tmp_path / "aggregator.toml").read_text() == before
    assert not (tmp_path / "sources.d").exists()


# -- remove / pause / resume --------------------------------------------------------------


def test_pause_and_resume_edit_only_the_enabled_key(tmp_path: Path, server: TestServer) -> None:
    """pause sets enabled = false in the defining file (an included one too); resume undoes it."""
    config = newsroom(tmp_path, server)
    included = tmp_path / "sources.d" / "newsroom.toml"
    original, original_included = config.read_text(), included.read_text()

    proc = run("pause", "extra", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "paused source 'extra'" in proc.stdout and "newsroom.toml" in proc.stdout
    assert config.read_text() == original
    assert (
        included.read_text()
        == original_included + "enabled = false  # paused by `aggregator pause`\n"
    )
    assert [s.name for s in load(config).sources if not s.enabled] == ["extra"]
    again = run("pause", "extra", cwd=tmp_path)
    assert again.returncode == 0 and "already paused" in again.stdout
    poll(config)
    assert server.hits("/desk.xml") and not server.hits("/extra.xml")

    assert run("resume", "extra", cwd=tmp_path).returncode == 0
    assert included.read_text() == original_included  # byte for byte

    assert run("pause", "desk", cwd=tmp_path).returncode == 0
    assert 'tags = ["world"]\nenabled = false  # paused' in config.read_text()
    assert config.read_text().count("#") == original.count("#") + 1
    assert run("resume", "desk", cwd=tmp_path).returncode == 0
    assert config.read_text() == original


def test_resume_sets_an_enabled_line_the_user_wrote(tmp_path: Path, server: TestServer) -> None:
    """A source written with enabled = false is resumed by setting it true, comment kept."""
    newsroom(tmp_path, server)
    included = tmp_path / "sources.d" / "newsroom.toml"
    included.write_text(included.read_text() + "enabled = false   # off for now\n")
    proc = run("resume", "extra", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert included.read_text().endswith("enabled = true   # off for now\n")
    assert all(s.enabled for s in load(tmp_path / "aggregator.toml").sources)


def test_remove_keeps_comments_and_history(tmp_path: Path, server: TestServer) -> None:
    """remove cuts the table from its file, keeps every comment, and the history stays."""
    config = newsroom(tmp_path, server)
    poll(config)
    assert sources_in_db(tmp_path / "history.db")["wire"] == 3

    proc = run("remove", "wire", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "removed source 'wire' from aggregator.toml" in proc.stdout
    assert "history stays in the database" in proc.stdout
    text = config.read_text()
    assert "wire" not in text.replace("# The wire, polled often.", "")
    assert '# The wire, polled often.\n\n# A quieter desk.\n[[sources]]\nname = "desk"' in text
    assert text.startswith("# My news sources. Keep this comment.\n")
    assert [s.name for s in load(config).sources] == ["desk", "extra"]
    poll(config)
    assert sources_in_db(tmp_path / "history.db")["wire"] == 3  # kept, now inactive

    included = run("remove", "extra", cwd=tmp_path)
    assert included.returncode == 0 and "newsroom.toml" in included.stdout
    assert (tmp_path / "sources.d" / "newsroom.toml").read_text() == (
        "# Sources from the newsroom list.\n"
    )

    unknown = run("remove", "nope", cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no source named 'nope'" in unknown.stderr and "desk" in unknown.stderr


def test_remove_refused_by_a_digest_saves_nothing(tmp_path: Path, server: TestServer) -> None:
    """Removing a source a digest names is refused with the reason; the file is unchanged."""
    config = newsroom(tmp_path, server)
    config.write_text(
        config.read_text()
        + '\n[[sinks]]\nkind = "stdout"\n\n[[digests]]\nsink = "stdout"\nsources = ["desk"]\n'
    )
    before = config.read_text()
    proc = run("remove", "desk", cwd=tmp_path)
    assert proc.returncode == 1
    assert "digests[0].sources: no source named desk" in proc.stderr
    assert "nothing was saved" in proc.stderr
    assert config.read_text() == before


# -- check --------------------------------------------------------------------------------


def test_check_url_prints_what_would_be_stored_and_writes_nothing(
    tmp_path: Path, server: TestServer
) -> None:
    """check URL works without any config, lists keys and titles, and creates no database."""
    server.serve("/feed.xml", story.rss(0))
    proc = run("check", server.url("/feed.xml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{server.url('/feed.xml')}: HTTP 200, ")
    assert "read as feed: 3 entries" in lines[0]
    assert any("talks" in line and story.TALKS.title in line for line in lines)
    assert any(story.MARKETS.title in line for line in lines)
    assert lines[-1] == "nothing was stored (check only)"
    assert list(tmp_path.iterdir()) == []  # no database, no config


def test_check_name_uses_the_config_and_leaves_the_database_alone(
    tmp_path: Path, server: TestServer
) -> None:
    """check NAME reads the source's settings ([limits] too: a warning) and changes no byte."""
    config = newsroom(tmp_path, server)
    config.write_text(
        config.read_text().replace("[storage]", "[limits]\nmax_entries = 2\n\n[storage]")
    )
    poll(config)
    db = tmp_path / "history.db"
    before = {p.name: p.read_bytes() for p in tmp_path.glob("history.db*")}
    server.serve("/desk.xml", story.rss(1))  # a poll now would store changes
    proc = run("check", "desk", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 entries" in proc.stdout
    assert "warning: more than 2 entries" in proc.stdout
    assert story.HOSPITAL.title in proc.stdout
    assert {p.name: p.read_bytes() for p in tmp_path.glob("history.db*")} == before
    assert db.exists()


def test_check_failures_say_why_and_exit_one(tmp_path: Path, server: TestServer) -> None:
    """A 404, a page read as a feed (its feed link named), an unknown name: exit 1, why."""
    server.serve(
        "/plain", "<html><body><p>Just a page.</p></body></html>", content_type="text/html"
    )
    linking = '<html><head><link rel="alternate" type="application/rss+xml" href="/f.xml">'
    server.serve("/story", linking + "</head><body>hi</body></html>", content_type="text/html")
    missing = run("check", server.url("/missing.xml"), cwd=tmp_path)
    assert missing.returncode == 1 and "fetch failed: HTTP 404" in missing.stderr
    page = run("check", server.url("/plain"), cwd=tmp_path)
    assert page.returncode == 1 and "does not read as kind 'feed'" in page.stderr
    assert "--kind page" in page.stderr
    linked = run("check", server.url("/story"), cwd=tmp_path)
    assert linked.returncode == 1
    assert f"the page links a feed: check {server.url('/f.xml')}" in linked.stderr
    unknown = run("check", "nope", cwd=tmp_path)
    assert unknown.returncode == 1 and "not an http(s) URL, nor the name" in unknown.stderr
    assert list(tmp_path.iterdir()) == []


def test_check_kind_page_reads_one_article(tmp_path: Path, server: TestServer) -> None:
    """--kind page reads the URL as one evolving article: one entry, its headline."""
    article = (
        "<html><head><title>Talks end</title></head><body><article><h1>Talks end</h1>"
        + "".join(f"<p>Paragraph {i} of the report on the talks in Antalya.</p>" for i in range(6))
        + "</article></body></html>"
    )
    server.serve("/report", article, content_type="text/html")
    proc = run("check", server.url("/report"), "--kind", "page", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "read as page: 1 entries" in proc.stdout and "Talks end" in proc.stdout


# -- config check -------------------------------------------------------------------------


def test_config_check_counts_or_names_the_problem(tmp_path: Path, server: TestServer) -> None:
    """A valid config: exit 0 with the counts; an invalid one: exit 2, file: key: problem."""
    config = newsroom(tmp_path, server)
    config.write_text(config.read_text() + '\n[[sinks]]\nkind = "stdout"\n')
    proc = run("config", "check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "aggregator.toml: valid: 3 sources, 1 sink\n"
    config.write_text(config.read_text().replace('interval = "5m"', 'interval = "5 minutes"'))
    bad = run("config", "check", "--config", str(config), cwd=tmp_path)
    assert bad.returncode == 2
    assert f"{config}: sources[0].interval (source 'wire'): invalid duration" in bad.stderr
    assert not (tmp_path / "history.db").exists()  # nothing polled, nothing opened


# -- per-source headers -------------------------------------------------------------------

SECRET_TOKEN = "Bearer tok-81f2c0ffee"
SECRET_COOKIE = "session=c00k1e-5ecret"


def secret_config(tmp: Path, server: TestServer) -> Path:
    server.serve("/members.xml", story.rss(0))
    config = tmp / "aggregator.toml"
    config.write_text(
        '[storage]\ndatabase = "history.db"\n\n[[sources]]\nname = "members"\n'
        f'url = "{server.url("/members.xml")}"\n'
        f'headers = {{ Authorization = "{SECRET_TOKEN}", Cookie_env = "FEED_COOKIE" }}\n'
    )
    return config


def test_headers_are_sent_by_check_and_never_shown(tmp_path: Path, server: TestServer) -> None:
    """check sends the source's headers (one read from the environment); no output shows them."""
    secret_config(tmp_path, server)
    proc = run("check", "members", cwd=tmp_path, FEED_COOKIE=SECRET_COOKIE)
    assert proc.returncode == 0, proc.stderr
    [hit] = server.hits("/members.xml")
    assert hit.headers["Authorization"] == SECRET_TOKEN
    assert hit.headers["Cookie"] == SECRET_COOKIE
    assert "tok-81f2" not in proc.stdout + proc.stderr
    assert "c00k1e" not in proc.stdout + proc.stderr


def test_an_unset_header_variable_is_a_config_error_naming_it(
    tmp_path: Path, server: TestServer
) -> None:
    """Cookie_env naming an unset variable: exit 2, the variable named, no secret shown."""
    secret_config(tmp_path, server)
    proc = run("config", "check", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        "aggregator.toml: sources[0].headers (source 'members'): Cookie_env:"
        " environment variable FEED_COOKIE is not set" in proc.stderr
    )
    assert "tok-81f2" not in proc.stderr
    assert not server.hits("/members.xml")


def test_poll_sends_the_headers_with_conditional_gets_and_logs_no_secret(
    tmp_path: Path, server: TestServer
) -> None:
    """Every poll sends the headers (the 304 poll too); logs and `sources` never show them."""
    secret_config(tmp_path, server)
    first = run("poll", "--log-level", "DEBUG", cwd=tmp_path, FEED_COOKIE=SECRET_COOKIE)
    second = run("poll", "--log-level", "DEBUG", cwd=tmp_path, FEED_COOKIE=SECRET_COOKIE)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    hits = server.hits("/members.xml")
    assert [h.status for h in hits] == [200, 304]
    assert "If-None-Match" in hits[1].headers
    for hit in hits:
        assert hit.headers["Authorization"] == SECRET_TOKEN
        assert hit.headers["Cookie"] == SECRET_COOKIE
    server.serve("/members.xml", "denied", status=401, content_type="text/plain")
    failed = run("poll", "--log-level", "DEBUG", cwd=tmp_path, FEED_COOKIE=SECRET_COOKIE)
    listed = run("sources", cwd=tmp_path, FEED_COOKIE=SECRET_COOKIE)
    assert "HTTP 401" in listed.stdout  # the failure is shown, the credentials are not
    for out in (first, second, failed, listed):
        assert "tok-81f2" not in out.stdout + out.stderr
        assert "c00k1e" not in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("then", "sent"), [("127.0.0.1", True), ("localhost", False)], ids=["same-host", "other-host"]
)
def test_headers_follow_a_redirect_only_on_the_same_host(
    server: TestServer, then: str, sent: bool
) -> None:
    """A redirect on the same host keeps the source's headers; one to another host drops them."""
    server.serve("/feed.xml", story.rss(0))
    target = f"http://{then}:{server.port}/feed.xml"
    server.serve("/old.xml", status=302, headers={"Location": target})

    async def fetch() -> None:
        async with Fetcher(FetchConfig()) as fetcher:
            response = await fetcher.fetch(
                server.url("/old.xml"), headers={"Authorization": SECRET_TOKEN}
            )
        assert response.final_url == target

    asyncio.run(fetch())
    [first] = server.hits("/old.xml")
    [second] = server.hits("/feed.xml")
    assert first.headers.get("Authorization") == SECRET_TOKEN
    assert ("Authorization" in second.headers) is sent
