"""Every ``aggregator`` command the README and the manual show runs, as a new user would run it.

The commands come from README.md and every page of ``docs/`` (``tests/readme_commands.py``),
so a command the documentation gains is tested without touching this file, unless it uses a
placeholder this file has no value for: then its test fails and names the file and line.
Each command runs as ``python3 -m aggregator ...`` in a fresh copy of one fixture directory: a
config (``aggregator.toml``, also ``$AGGREGATOR_CONFIG``) whose sources are on a local server, a
database polled through four states of an evolving story, a jsonl sink, a webhook sink
that refuses (failed deliveries), pending deliveries and an OPML file. The subprocesses
may connect to 127.0.0.1 only (a ``sitecustomize`` guard).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from aggregator.cli import main as cli_main
from tests import liveblog_story, pg, story
from tests.browserrig import SHELL, scripted_data
from tests.conftest import Harness
from tests.readme_commands import Command, doc_files, placeholders, readme_commands
from tests.receivers import WebhookReceiver
from tests.server import TestServer

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


# README placeholder -> value. ``{server}`` is the local server's base URL, ``{workdir}``
# the command's own copy of the fixture directory (also its cwd), ``{yesterday}`` and
# ``{tomorrow}`` dates around the polls, ``{failed_delivery}`` a failed delivery's id.
# A placeholder missing here fails its command.
VALUES: dict[str, str] = {
    "ENTRY": "talks",  # the story's lead entry (three versions)
    "NAME": "world",  # a source (after --sink, a sink: see OPTION_VALUES)
    "TEXT": "ceasefire",
    "URL": "{server}/rss",
    "IDS...": "{failed_delivery}",  # one of the refusing webhook's failed deliveries
    "N": "1",
    "M": "2",
    "S": "0",
    "NEW.db": "new.db",
    "FILE": "digest.out",
    "https://news.example/live/talks": "{server}/live/talks",  # a page linking its feed
    "https://news.example/rss": "{server}/rss",
    "/etc/aggregator/config.toml": "{workdir}/aggregator.toml",
    "/var/lib/aggregator/aggregator.db": "{workdir}/history.db",
    "/var/www/html/changes.atom": "{workdir}/changes.atom",
    "/var/backups/aggregator.db": "{workdir}/backup.db",
    "talks.png": "talks.png",
    # a live blog that builds its posts with script (docs/browser.md)
    "https://news.example/live/scripted/": "{server}/live/scripted/",
    # an empty PostgreSQL database, new for each command (docs/postgresql.md's copy-to)
    "postgresql://aggregator@/aggregator?host=/run/postgresql": "{empty_postgres}",
    "POSTGRES_URL": "{empty_postgres}",
}
# (option, placeholder) -> value, where the option decides what the placeholder means.
OPTION_VALUES: dict[tuple[str, str], str] = {
    ("--source", "NAME"): "wire",
    ("--sink", "NAME"): "hook",  # the webhook that refuses: it has failed deliveries
    ("--epochs", "N"): "2",
    ("--from", "T"): "{yesterday}",
    ("--to", "T"): "{tomorrow}",
}
# Example values the fixture cannot use as written: the fixture already has the source
# `world` (a page, as `check world --kind page` needs), so `add --name world` adds under
# another name; the demo's story is `summit`, the fixture's `talks` (a `--db` the fixture
# lacks is its history, copied there: see `run_command`).
LITERALS: dict[tuple[str, str], str] = {("--name", "world"): "world-2", ("", "summit"): "talks"}
# A README mention of a command without its required argument (`aggregator add URL` /
# `import-opml`, "(`aggregator pause` / `resume`)"): the form to run instead.
COMPLETIONS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("import-opml",): ("import-opml", "subscriptions.opml"),
    ("pause",): ("pause", "NAME"),
    ("backup",): ("backup", "/var/backups/aggregator.db"),
    ("search",): ("search", "TEXT"),
    ("history",): ("history", "ENTRY"),
    ("diff", "--image"): ("diff", "ENTRY", "--image", "talks.png"),
}
# A documented command that fails on purpose, as the manual shows: (exit status, what its
# stderr must say). Keyed on the command as written.
FAILS_AS_SHOWN: dict[str, tuple[int, str]] = {
    # a live blog built by script reads as nothing until rendered: check says so
    "check https://news.example/live/scripted/ --kind liveblog": (
        1,
        r"posts appear only after rendering.*--fetch browser",
    ),
}
# Commands a new user runs before there is any config: run in an empty directory.
FRESH: set[tuple[str, ...]] = {("init",)}
# Commands whose --db names a database they create (or none at all, for init).
NEW_DATABASE: set[tuple[str, ...]] = {("demo",), ("init",), ("poll",), ("run",)}


# Exit statuses a command documents besides 0 (none needed against this healthy fixture).
EXIT_OK: dict[tuple[str, ...], set[int]] = {}
# What a command's output must contain (a regex); every other command: a non-empty line.
EXPECT: dict[tuple[str, ...], str] = {
    ("demo",): r"Poll 2/2|Poll 4/4",
    ("poll",): r"\d+ sources polled, 0 failed",
    ("history",): r"Talks end with 'no progress'",
    ("diff",): r"\[-|\{\+",
    ("search",): r"(?i)ceasefire",
    ("sources",): r"world",
    ("status",): r"world",
    ("init",): r"aggregator\.toml",
    ("pause",): r"world",
    ("resume",): r"world",
    ("remove",): r"world",
    ("config", "check"): r"valid: 3 sources, 2 sinks",
    ("outbox",): r"events \[jsonl\]",
    ("outbox", "deliver"): r"[1-9]\d* delivered",  # the last fixture poll's events
    ("add",): r"added (feed|liveblog|page) source",
    ("import-opml",): r"imported 1 source into",
    ("export-opml",): r"<opml",
    ("run",): r"(?s)daemon\.started.*daemon\.stopped",
    ("serve",): r"<h1>Changes</h1>",  # the home page it served (see _run_serve)
    ("check",): r"read as (feed|page|liveblog): [1-9]\d* entries",
    ("backup",): r"backed up \S+ to \S+: [\d.,]+ (KiB|MiB) in [\d.]+ s \(quick_check: ok\)",
}
# What a command prints when it is given an option that changes its answer.
EXPECT_WITH: dict[tuple[str, ...], str] = {
    ("diff", "--image"): r"wrote \S+\.png \(1200x\d+ px\)",
    ("check", "--fetch"): r"rendered in Chromium\), read as liveblog: [1-9]\d* entries",
    ("add", "--fetch"): r"added liveblog source .*\(rendered in Chromium\)",
}
OUTPUT_OPTIONS = ("--output", "-o")
TIMEOUT = 60.0
DAEMON_WAIT = 5.0
TRACEBACK = "Traceback (most recent call last)"


def _distinct(commands: list[Command]) -> list[Command]:
    """One of each command as run: `history ENTRY` and `history talks` are one run."""
    seen: dict[tuple[str, ...], Command] = {}
    for command in commands:
        argv = COMPLETIONS.get(command.argv, command.argv)
        key = (*(VALUES.get(a, a) for a in argv), command.stdout_to or "")
        seen.setdefault(key, command)
    return list(seen.values())


COMMANDS = _distinct(readme_commands(*doc_files(ROOT), root=ROOT))

GUARD = '''"""Loaded by every README command the test runs: no network beyond 127.0.0.1."""
import socket

_connect = socket.socket.connect


def _loopback_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and not (
        str(host).startswith("127.") or host in ("::1", "localhost")
    ):
        raise OSError(f"README command test: no network beyond 127.0.0.1 ({host})")
    return _connect(self, address)


socket.socket.connect = _loopback_only
'''

LIVE_PAGE = """<!doctype html><html><head><title>Talks live</title>
<link rel="alternate" type="application/rss+xml" title="Talks" href="/live/talks.rss">
</head><body><p>Follow the talks.</p></body></html>"""


@dataclass(frozen=True)
class Site:
    """The shared fixture: a directory to copy per command, and the servers it polls."""

    base: Path
    runs: Path
    guard: Path
    server: TestServer
    receiver: WebhookReceiver
    polled_on: dt.date
    failed_delivery: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one command did."""

    argv: list[str]
    workdir: Path
    returncode: int
    stdout: str
    stderr: str
    output_file: Path | None


class MappingError(Exception):
    """A README command uses a placeholder this test has no value for."""


def command_path(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The command words of ``argv`` as the CLI knows them, e.g. ``("outbox", "list")``."""
    node: click.Command = cli_main
    path: list[str] = []
    for arg in argv:
        if not isinstance(node, click.Group) or arg not in node.commands:
            break
        node = node.commands[arg]
        path.append(arg)
    return tuple(path)


def concrete_argv(command: Command, site: Site, workdir: Path) -> list[str]:
    """``command``'s arguments with every placeholder replaced by its fixture value."""
    argv = COMPLETIONS.get(command.argv, command.argv)
    fill = {
        "server": site.server.url("").rstrip("/"),
        "workdir": str(workdir),
        "yesterday": (site.polled_on - dt.timedelta(days=1)).isoformat(),
        "tomorrow": (site.polled_on + dt.timedelta(days=1)).isoformat(),
        "failed_delivery": str(site.failed_delivery),
    }
    if any("{empty_postgres}" in VALUES.get(t, "") for _, t in placeholders(argv)):
        fill["empty_postgres"] = pg.server().create()
    values = {}
    for before, token in placeholders(argv):
        value = OPTION_VALUES.get((before, token)) if before else None
        value = value if value is not None else VALUES.get(token)
        if value is None:
            raise MappingError(
                f"{command.where}: `{command.text}`: no value for {token!r}"
                f"{f' after {before}' if before else ''}; add one to VALUES or OPTION_VALUES"
                " in tests/test_readme_commands.py"
            )
        values[(before, token)] = value.format(**fill)
    out = []
    for i, arg in enumerate(argv):
        before = argv[i - 1] if i > 0 and argv[i - 1].startswith("-") else None
        out.append(values.get((before, arg), LITERALS.get((before or "", arg), arg)))
    return out


def output_file(argv: list[str], command: Command, workdir: Path) -> Path | None:
    """The file the command writes its result to (``--output FILE``, ``> FILE``), if any."""
    if command.stdout_to:
        return workdir / command.stdout_to
    for option in OUTPUT_OPTIONS:
        if option in argv[:-1]:
            return workdir / argv[argv.index(option) + 1]
    return None


def environment(site: Site, workdir: Path) -> dict[str, str]:
    """A new user's environment: the config found through ``$AGGREGATOR_CONFIG``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{site.guard}{os.pathsep}{ROOT}",
        "HOME": str(workdir),
        "XDG_CONFIG_HOME": str(workdir / ".config"),
        "AGGREGATOR_CONFIG": str(workdir / "aggregator.toml"),
        "LANG": "C.UTF-8",
    }


def run_command(command: Command, site: Site, index: int) -> Outcome:
    """Run ``command`` in a fresh copy of the fixture directory."""
    workdir = site.runs / f"cmd{index:02d}"
    if command_path(command.argv) in FRESH:
        workdir.mkdir()
    else:
        shutil.copytree(site.base, workdir)
    argv = concrete_argv(command, site, workdir)
    if "--db" in argv[:-1] and command_path(command.argv) not in NEW_DATABASE:
        # a database the text made earlier (`demo --db demo.db`): the fixture's history
        target = workdir / argv[argv.index("--db") + 1]
        if not target.exists():
            shutil.copyfile(workdir / "history.db", target)
    full = [sys.executable, "-m", "aggregator", *argv]
    env = environment(site, workdir)
    if command_path(command.argv) == ("run",):
        returncode, out, err = _run_daemon(full, workdir, env)
    elif command_path(command.argv) == ("serve",):
        returncode, out, err = _run_serve(full, workdir, env)
    else:
        proc = subprocess.run(
            full, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        returncode, out, err = proc.returncode, proc.stdout, proc.stderr
    target = output_file(argv, command, workdir)
    if command.stdout_to and target is not None:
        target.write_text(out)
    return Outcome(full, workdir, returncode, out, err, target)


def _run_daemon(argv: list[str], workdir: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Start the daemon; once started, wait for its first poll (at most DAEMON_WAIT); SIGTERM."""
    out_path, err_path = workdir / "daemon.out", workdir / "daemon.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=err, text=True)
        _wait_for(proc, err_path, ("daemon.started",), TIMEOUT)
        _wait_for(proc, err_path, ("poll.done", "poll.failed"), DAEMON_WAIT)
        returncode = _terminate(proc)
    return returncode, out_path.read_text(), err_path.read_text()


def _run_serve(argv: list[str], workdir: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Start the web view on a free port (``--port 0``), GET its home page, SIGTERM.

    The output is the page it served.
    """
    argv = [*argv, "--port", "0"]
    err_path = workdir / "serve.err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=err, stderr=err, text=True)
        _wait_for(proc, err_path, ("read-only on",), TIMEOUT)
        found = re.search(r"read-only on (http://\S+/)", err_path.read_text())
        page = ""
        if found:
            with urllib.request.urlopen(found.group(1), timeout=TIMEOUT) as response:
                page = response.read().decode()
        returncode = _terminate(proc)
    return returncode, page, err_path.read_text()


def _terminate(proc: subprocess.Popen[str]) -> int:
    """SIGTERM (if still running); its exit status, killed after ``TIMEOUT``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _wait_for(proc: subprocess.Popen[str], log: Path, words: tuple[str, ...], wait: float) -> None:
    """Until one of ``words`` is in ``log``, the process ends, or ``wait`` seconds pass."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc.poll() is None:
        if any(word in log.read_text() for word in words):
            return
        time.sleep(0.1)


def _build_base(base: Path, server: TestServer, receiver: WebhookReceiver) -> None:
    """Config, database (four polls of the story), sinks with deliveries, an OPML file."""
    harness = Harness(base, server)
    harness.config_path = base / "aggregator.toml"
    harness.db_path = base / "history.db"
    harness.add("wire", "/feed.xml", interval="15m")
    harness.add("wire-atom", "/atom.xml", interval="15m", tags=["world"])
    harness.add("world", "/world/antalya-talks", kind="page", interval="15m")
    sinks = (
        '[[sinks]]\nkind = "jsonl"\nname = "events"\npath = "events.jsonl"\n\n'
        f'[[sinks]]\nkind = "webhook"\nname = "hook"\nurl = "{receiver.url()}"\n'
    )
    for epoch in range(4):
        last = epoch == 3  # its events stay pending, for `outbox deliver`
        harness.extra = ("[notify]\ndeliver_on_poll = false\n\n" if last else "") + sinks
        server.serve("/feed.xml", story.rss(epoch))
        server.serve("/atom.xml", story.atom(epoch), content_type="application/atom+xml")
        page = liveblog_story.talks_page(min(epoch, len(liveblog_story.PAGE_EPOCHS) - 1))
        server.serve("/world/antalya-talks", page, content_type="text/html; charset=utf-8")
        failed = [f"{r.source}: {r.error}" for r in harness.poll() if not r.ok]
        assert not failed, f"building the fixture: poll {epoch} failed: {failed}"
    harness.extra = sinks
    harness.config()
    # The config names the database relative to itself, so each copy uses its own.
    text = harness.config_path.read_text().replace(str(harness.db_path), "history.db")
    harness.config_path.write_text(text)
    server.serve("/feed.xml", story.rss(4))  # the story moves on: `poll` finds a change
    server.serve("/rss", story.rss(0))
    server.serve("/live/talks", LIVE_PAGE, content_type="text/html; charset=utf-8")
    server.serve("/live/talks.rss", story.rss(1))
    server.serve("/live/scripted/", SHELL, content_type="text/html; charset=utf-8")
    server.serve("/live/scripted/data.json", scripted_data(0), content_type="application/json")
    (base / "subscriptions.opml").write_text(
        '<?xml version="1.0"?>\n<opml version="2.0"><head><title>mine</title></head><body>'
        f'<outline text="World"><outline type="rss" text="Briefing" xmlUrl="{server.url("/rss")}"/>'
        "</outline></body></opml>\n"
    )


@pytest.fixture(name="site", scope="module")
def _site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = TestServer().start()
    receiver = WebhookReceiver()
    receiver.default_status = 400  # a permanent refusal: failed deliveries to list and retry
    try:
        base = tmp_path_factory.mktemp("readme-site")
        _build_base(base, server, receiver)
        guard = tmp_path_factory.mktemp("readme-guard")
        (guard / "sitecustomize.py").write_text(GUARD)
        runs = tmp_path_factory.mktemp("readme-runs")
        conn = sqlite3.connect(base / "history.db")
        try:  # closed before any copy: an open connection keeps -wal/-shm files changing
            [(failed,)] = conn.execute(
                "SELECT min(d.id) FROM deliveries d JOIN sinks s ON s.id = d.sink_id"
                " WHERE s.name = 'hook' AND d.status = 'failed'"
            )
        finally:
            conn.close()
        assert failed is not None, "the fixture has no failed delivery to retry or drop"
        yield Site(base, runs, guard, server, receiver, dt.datetime.now(dt.UTC).date(), failed)
    finally:
        receiver.stop()
        server.stop()


@pytest.fixture(name="outcomes", scope="module")
def _outcomes(request: pytest.FixtureRequest, site: Site) -> Iterator[dict[str, Future[Outcome]]]:
    """Every selected command, started at once on a few threads (each run is ~2 s of imports)."""
    selected = [
        item.callspec.params["command"]
        for item in request.session.items
        if item.module is sys.modules[__name__] and hasattr(item, "callspec")
        if "command" in item.callspec.params
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(run_command, c, site, i) for i, c in enumerate(selected)}
        yield futures
        for future in futures.values():
            future.cancel()


def test_readme_shows_the_commands_of_the_command_table() -> None:
    """The extraction finds the README's commands (not silently nothing)."""
    paths = {command_path(c.argv) for c in COMMANDS}
    assert len(COMMANDS) >= 20
    assert {("demo",), ("poll",), ("run",), ("digest",), ("outbox", "deliver")} <= paths


def test_the_installed_console_script_runs() -> None:
    """The README's `aggregator` is the installed console script, and it starts."""
    script = shutil.which("aggregator", path=str(Path(sys.executable).parent)) or shutil.which(
        "aggregator"
    )
    assert script is not None, "the `aggregator` console script is not installed"
    proc = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and TRACEBACK not in proc.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command_runs(
    command: Command, site: Site, outcomes: dict[str, Future[Outcome]]
) -> None:
    """The command exits as documented, without a traceback, and prints (or writes) a result."""
    try:
        future = outcomes.get(command.id)
        outcome = (
            future.result(timeout=TIMEOUT * 2)
            if future is not None
            else run_command(command, site, len(outcomes))
        )
    except MappingError as exc:
        pytest.fail(str(exc))
    where = f"{command.where}: `{command.text}`\nran: {' '.join(outcome.argv)}"
    report = (
        f"{where}\nexit {outcome.returncode}\nstdout:\n{outcome.stdout}\nstderr:\n{outcome.stderr}"
    )
    path = command_path(command.argv)
    assert TRACEBACK not in outcome.stderr + outcome.stdout, f"crashed\n{report}"
    if command.id in FAILS_AS_SHOWN:
        code, said = FAILS_AS_SHOWN[command.id]
        assert outcome.returncode == code, f"exit status\n{report}"
        assert re.search(said, outcome.stderr, re.S), f"stderr lacks /{said}/\n{report}"
        return
    if outcome.returncode == 2 and "Missing argument" in outcome.stderr:
        pytest.fail(
            f"{report}\nthe README names this command without an argument it needs:"
            " add the form to run to COMPLETIONS in tests/test_readme_commands.py"
        )
    assert outcome.returncode in {0} | EXIT_OK.get(path, set()), f"exit status\n{report}"
    if outcome.output_file is not None:
        assert outcome.output_file.is_file(), f"{outcome.output_file} not written\n{report}"
        result = outcome.output_file.read_text()
    else:
        result = outcome.stderr if path == ("run",) else outcome.stdout
    assert any(line.strip() for line in result.splitlines()), f"no output\n{report}"
    pattern = EXPECT.get(path)
    for (*words, option), expected in EXPECT_WITH.items():
        if path == tuple(words) and option in outcome.argv:
            pattern = expected
    if pattern is not None:
        assert re.search(pattern, result), f"output lacks /{pattern}/\n{report}"


def test_extraction_expands_synopses_and_refuses_unknown_placeholders(tmp_path: Path) -> None:
    """Blocks, `$`/`sudo`/`&&`, table shorthands, optional groups, alternatives, redirects,
    and `python3 -m aggregator` as `aggregator`."""
    readme = tmp_path / "README.md"
    readme.write_text(
        "```console\n$ sudo aggregator poll --source NAME && echo done   # a comment\n```\n"
        "```toml\naggregator = 'not a command'\n```\n"
        "| `aggregator sources` / `status` | x |\n"
        "| `aggregator digest [--since 24h \\| --from T --to T] [--format text\\|json]` | x |\n"
        "```sh\naggregator outbox drop IDS... | --all\naggregator export-opml > out.opml\n```\n"
        "Run `aggregator frobnicate WIDGET` to see.\n"
        "```sh\n.venv/bin/python3 -m aggregator demo --delay 0 && python3 -m aggregator -V\n```\n"
    )
    ids = [c.id for c in readme_commands(readme)]
    assert ids == [
        "poll --source NAME",
        "sources",
        "status",
        "digest",
        "digest --since 24h --format text",
        "digest --format json",
        "digest --from T --to T",
        "outbox drop IDS...",
        "outbox drop --all",
        "export-opml > out.opml",
        "frobnicate WIDGET",
        "demo --delay 0",
        "-V",
    ]
    [unmapped] = [c for c in readme_commands(readme) if c.argv[0] == "frobnicate"]
    server = TestServer()  # not started: only its URL is used
    site = Site(tmp_path, tmp_path, tmp_path, server, WebhookReceiver(), dt.date.today())
    try:
        with pytest.raises(
            MappingError, match=re.escape("line 13: `aggregator frobnicate WIDGET`")
        ):
            concrete_argv(unmapped, site, tmp_path)
    finally:
        site.receiver.stop()
        server.httpd.server_close()
