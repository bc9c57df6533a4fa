"""Rough edges a new user met, each run as the user runs it: `python3 -m aggregator ...`
as a subprocess, against a real config, a real SQLite database and, where it polls, the
local feed server."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator import __version__
from aggregator.cli.poll import poll_command
from aggregator.cli.reading import search_command
from tests import liveblog_story, story
from tests.conftest import write_config
from tests.server import TestServer

ROOT = Path(__file__).resolve().parent.parent


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python3 -m aggregator ARGS`` in ``cwd``, stdout and stderr piped (not a terminal)."""
    base = {k: v for k, v in os.environ.items() if k not in ("AGGREGATOR_CONFIG", "NO_COLOR")}
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_on_terminal(*args: str, cwd: Path, env: dict[str, str]) -> str:
    """Run the command with its stderr on a pseudo-terminal; what it wrote there."""
    master, slave = pty.openpty()
    base = {k: v for k, v in os.environ.items() if k not in ("AGGREGATOR_CONFIG", "NO_COLOR")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    proc.wait(timeout=60)
    return b"".join(chunks).decode("utf-8", "replace")


def log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def feed_config(
    tmp_path: Path, server: TestServer, names: tuple[str, ...], *, extra: str = ""
) -> Path:
    for name in names:
        server.serve(f"/{name}.xml", story.rss(0))
    sources = [{"name": n, "url": server.url(f"/{n}.xml")} for n in names]
    return write_config(tmp_path / "aggregator.toml", sources, db=tmp_path / "a.db", extra=extra)


JSONL_SINK = '[[sinks]]\nkind = "jsonl"\npath = "events.jsonl"\nsend_first_listing = true\n'


# -- 1. outbox deliver ------------------------------------------------------------------


def test_outbox_deliver_prints_its_summary_run_after_run(
    tmp_path: Path, server: TestServer
) -> None:
    """`outbox deliver` sends the queued events, says how many, and does so again when idle."""
    extra = "[notify]\ndeliver_on_poll = false\n" + JSONL_SINK
    feed_config(tmp_path, server, ("world",), extra=extra)
    assert run("poll", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "events.jsonl").exists()  # poll did not deliver: the outbox holds them

    first = run("outbox", "deliver", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "3 delivered, 0 to retry later, 0 failed\n"
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(e)["kind"] for e in events] == ["new"] * 3

    second = run("outbox", "deliver", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "0 delivered, 0 to retry later, 0 failed\n"
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 3


# -- 2. poll's exit status --------------------------------------------------------------


def test_poll_exits_1_when_every_source_failed(tmp_path: Path, server: TestServer) -> None:
    """A pass in which no source could be polled fails, so cron and systemd notice."""
    write_config(
        tmp_path / "aggregator.toml",
        [{"name": "broken", "url": server.url("/missing.xml")}],
        db=tmp_path / "a.db",
    )
    proc = run("poll", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("1 source polled, 1 failed")
    assert "failed: broken: HTTP 404" in proc.stdout


def test_poll_exit_statuses_are_documented_and_kept(tmp_path: Path, server: TestServer) -> None:
    """Some failed: 0; unknown --source (usage): 2; poll --help lists the statuses."""
    feed_config(tmp_path, server, ("world",))
    with (tmp_path / "aggregator.toml").open("a") as handle:
        handle.write(f'[[sources]]\nname = "broken"\nurl = "{server.url("/gone.xml")}"\n')
    assert run("poll", cwd=tmp_path).returncode == 0
    unknown = run("poll", "--source", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "no source named nope" in unknown.stderr
    assert "1  every polled source failed" in (poll_command.help or "")
    assert "2  usage or config error" in (poll_command.help or "")


# -- 5. $AGGREGATOR_CONFIG naming a missing file ------------------------------------------


@pytest.mark.parametrize("command", [("poll",), ("sources",)])
def test_missing_aggregator_config_is_an_error_not_a_fallback(
    tmp_path: Path, server: TestServer, command: tuple[str, ...]
) -> None:
    """A set $AGGREGATOR_CONFIG naming no file stops, even with ./aggregator.toml present."""
    feed_config(tmp_path, server, ("world",))
    missing = tmp_path / "nope" / "x.toml"
    proc = run(*command, cwd=tmp_path, env={"AGGREGATOR_CONFIG": str(missing)})
    assert proc.returncode == 2
    assert proc.stderr == (
        f"aggregator: {missing}: file not found (named by $AGGREGATOR_CONFIG; fix or unset"
        " the variable, or pass --config FILE)\n"
    )
    assert server.hits("/world.xml") == []  # ./aggregator.toml was not used instead
    assert not (tmp_path / "a.db").exists()


# -- 6. where a typo is and what was meant ------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[defaults]\nadaptiv = false\n[[sources]]\nurl = "https://a.example/f"\n',
            "c.toml: defaults.adaptiv: unknown key for kind 'feed'; did you mean 'adaptive'?",
        ),
        (
            '[defaults]\ninterval = "5 minutes"\n[[sources]]\nurl = "https://a.example/f"\n',
            "c.toml: defaults.interval: invalid duration '5 minutes'",
        ),
        (
            '[[sources]]\nurl = "https://a.example/f"\nintervall = "5m"\n',
            "c.toml: sources[0].intervall: unknown key for kind 'feed'; did you mean 'interval'?",
        ),
        (
            '[storage]\ndatabse = "x.db"\n',
            "c.toml: storage.databse: unknown key; did you mean 'database'?",
        ),
        ('[sourcs]\nurl = "x"\n', "c.toml: sourcs: unknown key; did you mean 'sources'?"),
        (
            '[[sinks]]\nkind = "jsonl"\npth = "e.jsonl"\n',
            "c.toml: sinks[0].pth: unknown key for sink kind 'jsonl'; did you mean 'path'?",
        ),
        (
            '[[sinks]]\nkind = "jsonl"\npath = "e.jsonl"\nkeywrds = ["x"]\n',
            "c.toml: sinks[0].keywrds: unknown key for sink kind 'jsonl'; did you mean 'keywords'?",
        ),
    ],
)
def test_config_typos_are_placed_and_explained(tmp_path: Path, toml: str, message: str) -> None:
    """A bad key is reported where it is written, with the known key it is closest to."""
    (tmp_path / "c.toml").write_text(toml)
    proc = run("poll", "--config", "c.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"aggregator: {message}"), proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_defaults_typo_is_placed_in_the_main_file_for_included_sources(
    tmp_path: Path,
) -> None:
    """Sources from an `include` take the main file's [defaults]: a typo there is named there."""
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "s.toml").write_text('[[sources]]\nurl = "https://a.example/f"\n')
    (tmp_path / "c.toml").write_text('include = ["more/*.toml"]\n[defaults]\nadaptiv = false\n')
    proc = run("poll", "--config", "c.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("aggregator: c.toml: defaults.adaptiv: unknown key"), proc.stderr


# -- 10. reading commands, version, colour, log volume --------------------------------------


def test_diff_search_and_history_as_a_user_reads(tmp_path: Path, server: TestServer) -> None:
    """diff with nothing to compare: one line, exit 1; search: exit 1 without a match, like
    grep; history: a page source's name finds its one entry."""
    server.serve("/world.xml", story.rss(0))
    server.serve(
        "/talks.html", liveblog_story.talks_page(0, None), content_type="text/html; charset=utf-8"
    )
    sources = [
        {"name": "world", "url": server.url("/world.xml")},
        {"name": "antalya", "url": server.url("/talks.html"), "kind": "page"},
    ]
    write_config(tmp_path / "aggregator.toml", sources, db=tmp_path / "a.db")
    assert run("poll", cwd=tmp_path).returncode == 0

    diff = run("diff", "talks", cwd=tmp_path)
    assert diff.returncode == 1 and diff.stdout == ""
    [line] = diff.stderr.splitlines()  # no usage block
    assert line.startswith("aggregator: entry ") and "only one version so far" in line

    hit = run("search", "corridors", cwd=tmp_path)
    assert hit.returncode == 0 and "[world]" in hit.stdout
    miss = run("search", "zeppelin", cwd=tmp_path)
    assert miss.returncode == 1
    assert miss.stdout == "" and "no version matches 'zeppelin'" in miss.stderr
    assert "Exits 1 when no version matches" in (search_command.help or "")

    history = run("history", "antalya", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    assert "[antalya]" in history.stdout and "1 version" in history.stdout.splitlines()[0]


def test_short_version_flag(tmp_path: Path) -> None:
    """-V prints the version, like --version."""
    proc = run("-V", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == f"aggregator, version {__version__}\n"


def test_no_color_turns_off_log_colour_on_a_terminal(tmp_path: Path, server: TestServer) -> None:
    """On a terminal the log lines are coloured, unless $NO_COLOR is set."""
    write_config(
        tmp_path / "aggregator.toml",
        [{"name": "broken", "url": server.url("/missing.xml")}],
        db=tmp_path / "a.db",
    )
    coloured = run_on_terminal("poll", cwd=tmp_path, env={})
    plain = run_on_terminal("poll", cwd=tmp_path, env={"NO_COLOR": "1"})
    assert "poll.failed" in coloured and "poll.failed" in plain
    assert "\x1b[" in coloured
    assert "\x1b[" not in plain


def test_a_piped_poll_logs_what_a_person_acts_on(tmp_path: Path, server: TestServer) -> None:
    """Info: one line per source that changed; deliveries and unchanged polls are debug."""
    feed_config(tmp_path, server, ("a", "b", "c"), extra=JSONL_SINK)
    first = run("poll", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = log_lines(first.stderr)
    assert sorted((line["event"], line["source"]) for line in lines) == [
        ("poll.done", "a"),
        ("poll.done", "b"),
        ("poll.done", "c"),
    ]
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 9  # delivered all

    again = run("poll", cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == ""  # nothing changed: nothing to say

    server.serve("/a.xml", story.rss(1))
    debug = log_lines(run("poll", "--log-level", "DEBUG", cwd=tmp_path).stderr)
    outcomes = {line["source"]: line["outcome"] for line in debug if line["event"] == "poll.done"}
    assert outcomes["a"] == "changed" and outcomes["b"] != "changed"
    assert any(line["event"] == "delivery.delivered" for line in debug)
