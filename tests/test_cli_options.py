"""One way to pass options: --config, --db and --log-level anywhere, --help everywhere.

The tree walk covers every command and subcommand the CLI has, so a command added later
is checked without touching this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aggregator.cli import main
from aggregator.cli.common import CommonOptions
from tests.conftest import Harness

ROOT = Path(__file__).resolve().parent.parent
CONFIG, DB, LEVEL = "given.toml", "given.db", "debug"
COMMON = ["--config", CONFIG, "--db", DB, "--log-level", LEVEL]


def leaves(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command that can be run: leaves, and groups invoked on their own."""
    for name, command in sorted(group.commands.items()):
        here = (*path, name)
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield here
            yield from leaves(command, here)
        else:
            yield here


LEAVES = list(leaves())


def placements(path: tuple[str, ...]) -> list[list[str]]:
    """The common options before any command, after each command name on the way down."""
    return [[*path[:i], *COMMON, *path[i:]] for i in range(len(path) + 1)]


def arguments(command: click.Command, tmp: Path) -> list[str]:
    """A value for each required argument of ``command`` (enough to parse, not to run)."""
    values = []
    for param in command.params:
        if not isinstance(param, click.Argument) or not param.required:
            continue
        if isinstance(param.type, click.types.IntParamType):
            values.append("1")
        elif isinstance(param.type, click.Path) and param.type.exists:
            existing = tmp / "exists.opml"
            existing.touch()
            values.append(str(existing))
        else:
            values.append("x")
    return values


def unparsed(ctx: click.Context) -> list[str]:
    """A group context's words left for its subcommand (click 8's ``protected_args``)."""
    with warnings.catch_warnings():  # deprecated for click 9, where ``args`` holds them all
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*getattr(ctx, "protected_args", []), *ctx.args]


def parsed_options(argv: list[str]) -> CommonOptions:
    """Parse ``argv`` down to its leaf as click does, running no command; the common options."""
    ctx = main.make_context("aggregator", list(argv))
    command: click.Command = main
    args = unparsed(ctx)
    while isinstance(command, click.Group) and args:
        name, sub, rest = command.resolve_command(ctx, args)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
        args = unparsed(ctx)
    return ctx.meta["aggregator.common_options"]


def command_at(path: tuple[str, ...]) -> click.Command:
    """The command object at ``path``."""
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_the_walk_finds_every_command() -> None:
    """The tree walk is not silently empty: it finds nested subcommands and runnable groups."""
    assert {("poll",), ("outbox",), ("outbox", "drop"), ("config", "check")} <= set(LEAVES)
    assert len(LEAVES) >= 24


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_common_options_are_accepted_in_every_place(path: tuple[str, ...], tmp_path: Path) -> None:
    """--config, --db and --log-level parse before the command and after every name on the
    way down to it, and reach the command with the values given."""
    extra = arguments(command_at(path), tmp_path)
    for argv in placements(path):
        options = parsed_options([*argv, *extra])
        assert options == CommonOptions(CONFIG, DB, "DEBUG"), argv


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_help_works_without_a_config_in_every_place(
    path: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--help of every command works with no config, and with a broken one in the way,
    with the common options before or after its name."""
    runner = CliRunner()
    env = {"AGGREGATOR_CONFIG": None, "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    monkeypatch.chdir(tmp_path)
    for broken in (False, True):
        if broken:
            Path("aggregator.toml").write_text("[storage\nnot toml")
        for argv in [[*path, "--help"], *([*a, "--help"] for a in placements(path))]:
            result = runner.invoke(main, argv, env=env, catch_exceptions=False)
            assert result.exit_code == 0, f"{argv}: {result.output}"
            assert "Usage:" in result.output and "--db" in result.output


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python3 -m aggregator ARGS`` as a user runs it, in ``cwd`` with no user config."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOME": str(cwd),
        "XDG_CONFIG_HOME": str(cwd / ".config"),
    }
    env.pop("AGGREGATOR_CONFIG", None)
    env.pop("AGGREGATOR_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(name="site")
def _site(harness: Harness) -> Harness:
    """A polled config and database in ``harness.tmp``, with a jsonl sink."""
    from tests import story

    harness.server.serve("/feed.xml", story.rss(0))
    harness.add("world", "/feed.xml")
    harness.extra = (
        '[[sinks]]\nkind = "jsonl"\nname = "events"\npath = "events.jsonl"\n'
        "send_first_listing = true\n"
    )
    harness.poll()
    return harness


def test_the_issue_s_examples_work_as_typed(site: Harness, tmp_path: Path) -> None:
    """`outbox list --config F` from elsewhere, `outbox drop --db D`, `config --config F
    check` and `aggregator --config F poll` all do what they say."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config, db = str(site.config_path), str(site.db_path)
    listed = run("outbox", "list", "--config", config, "--status", "delivered", cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert "events\tdelivered\t1 attempt\t" in listed.stdout
    checked = run("config", "--config", config, "check", cwd=elsewhere)
    assert checked.returncode == 0 and "valid: 1 source, 1 sink" in checked.stdout
    polled = run("--config", config, "poll", cwd=elsewhere)
    assert polled.returncode == 0 and polled.stdout.startswith("1 source polled"), polled.stderr
    dropped = run("outbox", "drop", "--db", db, "--all", cwd=site.tmp)
    assert dropped.returncode == 0 and "0 deliveries dropped" in dropped.stdout, dropped.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox"],
        ["outbox", "list"],
        ["outbox", "deliver"],
        ["outbox", "retry"],
        ["sources"],
        ["status"],
        ["digest"],
        ["history", "talks"],
        ["serve"],
        ["backup", "b.db"],
    ],
    ids=" ".join,
)
def test_a_command_that_reads_never_creates_a_database(argv: list[str], tmp_path: Path) -> None:
    """A --db that does not exist is an error naming the path; no file or directory appears."""
    config = tmp_path / "aggregator.toml"
    config.write_text(
        '[[sources]]\nurl = "https://news.example/rss"\n'
        '[[sinks]]\nkind = "jsonl"\npath = "events.jsonl"\n'
    )
    missing = tmp_path / "nope" / "none.db"
    proc = run(*argv, "--db", str(missing), "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"no database: {missing} (--db) does not exist" in proc.stderr
    assert not missing.parent.exists()
    assert not (tmp_path / "b.db").exists()


def test_a_database_url_is_passed_on_unchecked(tmp_path: Path) -> None:
    """A --db containing :// is a URL: no file is looked for or created for it."""
    from aggregator.cli.common import database_location

    url = "postgresql://user@host/db?host=/run/postgresql"

    @click.command()
    @click.option(
        "--db",
        callback=lambda ctx, _p, v: ctx.meta.update(
            {"aggregator.common_options": CommonOptions(db=v)}
        ),
        expose_value=False,
    )
    def probe() -> None:
        for mode in ("read", "write", "any"):
            click.echo(database_location(mode))  # type: ignore[arg-type]

    result = CliRunner().invoke(probe, ["--db", url])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [url] * 3
    assert list(tmp_path.iterdir()) == []


def test_a_database_url_in_the_config_is_kept_as_written(tmp_path: Path) -> None:
    """`[storage] database = "postgresql://..."` is not made a path beside the config."""
    from aggregator import config
    from aggregator.cli.common import database_location

    url = "postgresql://agg@/agg?host=/run/postgresql"
    path = tmp_path / "c.toml"
    path.write_text(f'[storage]\ndatabase = "{url}"\n')
    loaded = config.load(path)
    assert loaded.storage.database == url

    @click.command()
    def probe() -> None:
        click.echo(database_location("read", config=loaded))

    result = CliRunner().invoke(probe, [])
    assert result.output.strip() == url, result.output


def test_a_read_only_database_directory_says_why(tmp_path: Path) -> None:
    """poll on a read-only mount names the directory and the reason, instead of SQLite's
    bare "unable to open database file"."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to make a read-only mount")
    ro = tmp_path / "ro"
    ro.mkdir()
    config = tmp_path / "c.toml"
    config.write_text('[[sources]]\nurl = "http://127.0.0.1:9/f"\n')
    script = (
        f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
        f"{sys.executable} -m aggregator poll --config {config} --db {ro}/x.db"
    )
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if "Operation not permitted" in proc.stderr and "aggregator" not in proc.stderr:
        pytest.skip(f"this machine allows no mount namespace: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write the database {ro}/x.db (--db): {ro} is on a read-only file system" in (
        proc.stderr
    )


def test_backup_of_a_missing_database_writes_nothing(tmp_path: Path) -> None:
    """backup with a --db typo fails naming it, and leaves no empty 'successful' copy."""
    proc = run("backup", "b.db", "--db", str(tmp_path / "typo.db"), cwd=tmp_path)
    assert proc.returncode == 1 and "typo.db (--db) does not exist" in proc.stderr
    assert list(tmp_path.rglob("*.db")) == []  # no backup, no empty database


def test_the_cli_s_delivery_statuses_are_the_store_s() -> None:
    """`outbox list --status` offers exactly the statuses the store knows."""
    from aggregator.cli.outbox import STATUSES
    from aggregator.store.outbox import STATUSES as STORE_STATUSES

    assert STATUSES == STORE_STATUSES
