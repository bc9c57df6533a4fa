"""Configuration: every mistake stops start-up with file, key path and problem."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aggregator import config
from aggregator.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def load_text(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "aggregator.toml"
    path.write_text(text)
    return config.load(path)


def test_defaults_apply_to_every_source(tmp_path: Path) -> None:
    """[defaults] fills keys a source does not set; names default to host and path."""
    cfg = load_text(
        tmp_path,
        '[defaults]\ninterval = "5m"\n[[sources]]\nurl = "https://n.example/feed.xml"\n'
        '[[sources]]\nurl = "https://n.example/other"\ninterval = "90s"\n',
    )
    assert [s.interval for s in cfg.sources] == [300.0, 90.0]
    assert cfg.sources[0].name == "n.example/feed.xml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[sources]]\nurl = "https://a.example/f"\nintervall = "5m"\n',
            "sources[0].intervall: unknown key",
        ),
        ('[[sources]]\nurl = "ftp://a.example/f"\n', "sources[0].url: not an http(s) URL"),
        (
            '[[sources]]\nurl = "https://a.example/f"\ninterval = "5 minutes"\n',
            "sources[0].interval",
        ),
        (
            '[[sources]]\nname="x"\nurl = "https://a.example/f"\n[[sources]]\nname="x"\nurl = "https://b.example/f"\n',
            "sources[1].name: duplicate name 'x'",
        ),
        (
            '[[sources]]\nurl = "https://a.example/f"\nkind = "podcast"\n',
            "sources[0].kind: unknown source kind 'podcast'",
        ),
        ('[storage]\ndatabse = "x.db"\n', "storage.databse: unknown key"),
        ('[[sources]]\nname = "w"\n', "sources[0].url (source 'w'): required key is missing"),
        (
            '[[sources]]\nurl = "https://a.example/f"\nremovals = "sometimes"\n',
            "sources[0].removals",
        ),
        ('[[sources]]\nurl = "https://a.example/f"\nignore = ["(unclosed"]\n', "not a valid regex"),
        ("[[sources]\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    """Each kind of mistake is reported with where it is and what is wrong."""
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert str(tmp_path / "aggregator.toml") in str(info.value)
    assert message in str(info.value)


def test_lookup_order_and_helpful_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --config: $AGGREGATOR_CONFIG, ./aggregator.toml, XDG; else how to start."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("AGGREGATOR_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"Start one with `aggregator init`"):
        config.find_config()
    xdg = tmp_path / "xdg" / "aggregator" / "config.toml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text("")
    assert config.find_config() == xdg
    (tmp_path / "aggregator.toml").write_text("")
    assert config.find_config() == Path("aggregator.toml")
    monkeypatch.setenv("AGGREGATOR_CONFIG", str(tmp_path / "env.toml"))
    (tmp_path / "env.toml").write_text("")
    assert config.find_config() == tmp_path / "env.toml"


def test_example_config_ships_in_the_package_and_is_what_init_writes() -> None:
    """The commented example is package data, loads without errors, and is init's starter."""
    from importlib import resources

    from aggregator import config_edit

    shipped = resources.files("aggregator.config").joinpath("example.toml")
    text = shipped.read_text(encoding="utf-8")
    assert text == config_edit.STARTER
    assert not (ROOT / "config" / "example.toml").exists()  # one copy, the installed one
    cfg = config.parse(tomllib.loads(text), "example.toml")
    assert cfg.sources == [] and cfg.storage.database == "aggregator.db"


def test_the_example_configs_in_config_load() -> None:
    """Every example in config/ passes the same validation as a user's file."""
    examples = sorted((ROOT / "config").glob("*.toml"))
    assert [p.name for p in examples] == ["node.toml"]
    node = config.load(examples[0])
    assert node.storage.database.startswith("postgresql://")
    assert [s.name for s in node.sources] == ["talks-live", "talks-report", "world"]
    assert [s.kind for s in node.sinks] == ["webhook"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_poll_with_bad_config_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    """`aggregator poll` refuses to run on a bad config and says why."""
    (tmp_path / "bad.toml").write_text(
        '[[sources]]\nurl = "https://a.example/f"\nintervall = "5m"\n'
    )
    proc = run_cli("poll", "--config", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.toml: sources[0].intervall: unknown key" in proc.stderr


def test_poll_without_any_config_says_how_to_start(tmp_path: Path) -> None:
    """With no config anywhere, the message says how to create one."""
    env_home = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "x")}
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", "poll"],
        cwd=tmp_path,
        env={**os.environ, **env_home, "PYTHONPATH": str(ROOT), "AGGREGATOR_CONFIG": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no configuration file found" in proc.stderr


def test_poll_with_unwritable_database_exits_non_zero(tmp_path: Path) -> None:
    """A database path that cannot be created is a config error (exit 2, nothing polled)
    naming the path and why, not a silent pass."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    (tmp_path / "c.toml").write_text(
        f'[storage]\ndatabase = "{blocker}/sub/x.db"\n[[sources]]\nurl = "http://127.0.0.1:9/f"\n'
    )
    proc = run_cli("poll", "--config", "c.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"cannot use the database {blocker}/sub/x.db" in proc.stderr
    assert f"{blocker} is not a directory" in proc.stderr


def test_relative_database_is_beside_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cron or systemd running from another directory still find the same database."""
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "aggregator.toml"
    path.write_text('[storage]\ndatabase = "history.db"\n')
    monkeypatch.chdir(tmp_path)
    assert config.load(path).storage.database == str(tmp_path / "etc" / "history.db")
    path.write_text("")
    monkeypatch.delenv("AGGREGATOR_DB", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert config.load(path).storage.database == "aggregator.db"  # unset: the working directory
