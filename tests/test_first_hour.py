"""The first hour of a new user (issue 20): typos are not accepted in silence, a paused source
looks paused, an interrupted poll says what it kept, and the small answers say what they
mean. Each runs the real command, ``python3 -m aggregator ...``, as a subprocess.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import story
from tests.conftest import Harness
from tests.test_cli_rough_edges import ROOT, run


def config_with(tmp_path: Path, source: str, extra: str = "") -> Path:
    """A config of one source table holding ``source`` (TOML lines), and ``extra``."""
    path = tmp_path / "aggregator.toml"
    path.write_text(
        f'[storage]\ndatabase = "h.db"\n{extra}\n[[sources]]\nname = "tech"\n'
        f'url = "https://tech.example/rss"\n{source}\n'
    )
    return path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('interval = "5"', 'duration \'5\' has no unit: write "5s" for seconds or "5m"'),
        ("interval = 5", 'duration \'5\' has no unit: write "5s" for seconds or "5m"'),
        ('interval = "500000d"', "'500000d' is longer than 365 days: a typo?"),
        ('min_interval = "90"', "duration '90' has no unit"),
    ],
)
def test_a_duration_typo_is_refused_with_the_unit_hint(
    line: str, expected: str, tmp_path: Path
) -> None:
    """A bare number or an absurd interval stops `config check` (exit 2), naming the key."""
    config_with(tmp_path, line)
    proc = run("config", "check", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert "aggregator.toml: sources[0]." in proc.stderr and expected in proc.stderr


def test_an_interval_under_a_minute_loads_with_a_warning_naming_the_source(
    tmp_path: Path,
) -> None:
    """`interval = "0.2s"` is allowed (a server of your own) but not silently."""
    config_with(tmp_path, 'interval = "0.2s"')
    proc = run("config", "check", cwd=tmp_path)
    assert proc.returncode == 0 and "valid: 1 source, 0 sinks" in proc.stdout
    [line] = [json.loads(line) for line in proc.stderr.splitlines()]  # JSON off a terminal
    assert (line["level"], line["event"]) == ("warning", "config.warning")
    assert "source 'tech': interval 0.2s is under a minute" in line["problem"]


def test_many_intervals_under_a_minute_give_one_warning_not_one_per_source(
    tmp_path: Path,
) -> None:
    """A config of 500 sources at 30 s (a test rig, a server of your own): one warning line
    with the count and the shortest, not 500 lines at every start."""
    sources = "".join(
        f'[[sources]]\nname = "f{n}"\nurl = "http://127.0.0.1:9/{n}.xml"\n'
        f'interval = "{30 - (n == 7)}s"\n'
        for n in range(500)
    )
    (tmp_path / "aggregator.toml").write_text(sources)
    proc = run("config", "check", cwd=tmp_path)
    assert proc.returncode == 0 and "valid: 500 sources" in proc.stdout
    [line] = [json.loads(line) for line in proc.stderr.splitlines()]
    assert "500 sources ('f0', 'f1', 'f2', …) have an interval under a minute" in line["problem"]
    assert "the shortest 29s, source 'f7'" in line["problem"]


def test_since_without_a_unit_is_refused(tmp_path: Path) -> None:
    """`digest --since 5` says to write 5m or 5s, instead of reading 5 seconds."""
    proc = run("digest", "--since", "5", "--db", str(tmp_path / "x.db"), cwd=tmp_path)
    assert proc.returncode == 2 and "has no unit" in proc.stderr


def test_config_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    """Two mistakes of different kinds in one file: both are reported by one run."""
    (tmp_path / "aggregator.toml").write_text(
        '[[sources]]\nname = "a"\nurl = "https://a.example/rss"\nselectorz = 1\n'
        '[[sources]]\nname = "a"\nurl = "https://b.example/rss"\n'
        '[[sinks]]\nkind = "webhook"\nurl = "ftp://hooks.example/"\n'
    )
    proc = run("config", "check", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert any("sources[0].selectorz: unknown key" in line for line in lines), proc.stderr
    assert any("sources[1].name: duplicate name 'a'" in line for line in lines), proc.stderr
    assert any("sinks[0].url: not an http(s) URL" in line for line in lines), proc.stderr


@pytest.fixture(name="polled")
def _polled(harness: Harness) -> Harness:
    """Two sources polled once: `tech` and `world`."""
    harness.server.serve("/feed.xml", story.rss(0))
    harness.server.serve("/tech.xml", story.rss(1))
    harness.add("world", "/feed.xml")
    harness.add("tech", "/tech.xml")
    harness.poll()
    return harness


def test_paused_and_removed_sources_say_so_at_once(polled: Harness) -> None:
    """After `pause tech` and `remove world`, `sources` and `status` show it before any poll."""
    assert run("pause", "tech", cwd=polled.tmp).returncode == 0
    listed = run("sources", cwd=polled.tmp)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "(paused)" in rows["tech"] and "(" not in rows["world"].split("feed")[0]
    status = run("status", cwd=polled.tmp)
    assert "tech: paused (enabled = false in the config); not polled" in status.stdout
    assert "world: ok" in status.stdout

    assert run("remove", "world", cwd=polled.tmp).returncode == 0
    listed = run("sources", cwd=polled.tmp)
    assert "world (removed)" in listed.stdout and "tech (paused)" in listed.stdout
    status = run("status", cwd=polled.tmp)
    assert "world: removed from the config; not polled (its history stays)" in status.stdout

    assert run("resume", "tech", cwd=polled.tmp).returncode == 0
    assert "tech (paused)" not in run("sources", cwd=polled.tmp).stdout


def _wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():  # type: ignore[operator]
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_poll_says_what_it_kept(
    sig: signal.Signals, code: int, harness: Harness
) -> None:
    """Ctrl-C (130) or SIGTERM (143) while one source hangs: the finished source is stored,
    and the message says one of two sources was polled and stored."""
    harness.server.serve("/fast.xml", story.rss(0))
    harness.server.serve("/slow.xml", story.rss(0), delay=20)
    harness.add("fast", "/fast.xml")
    harness.add("slow", "/slow.xml")
    harness.config()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "poll", "--config", str(harness.config_path)],
        cwd=harness.tmp,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(harness.tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the fast source stored, the slow one's request still being answered
    _wait_for(lambda: _versions(harness.db_path, "fast") > 0 and harness.server.active > 0)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Aborted!" not in err and "Traceback" not in err
    assert f"poll interrupted by {sig.name}: 1 of 2 sources polled and stored" in err
    assert "1 not polled" in err
    assert _versions(harness.db_path, "fast") == len(story.EPOCHS[0])
    assert _versions(harness.db_path, "slow") == 0


def _versions(db: Path, source: str) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:  # not created yet
        return 0
    try:
        return conn.execute(
            "SELECT count(*) FROM versions v JOIN entries e ON e.id = v.entry_id"
            " JOIN sources s ON s.id = e.source_id WHERE s.name = ?",
            [source],
        ).fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0
    finally:
        conn.close()


class _Refuser(BaseHTTPRequestHandler):
    """A webhook receiver that refuses every event with 400 and an empty body."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(name="refuser")
def _refuser() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(name="outboxed")
def _outboxed(harness: Harness, refuser: str) -> Harness:
    """A poll whose events a webhook refused (400, no body): failed deliveries."""
    harness.server.serve("/feed.xml", story.rss(0))
    harness.add("world", "/feed.xml")
    harness.extra = (
        f'[[sinks]]\nkind = "webhook"\nname = "hook"\nurl = "{refuser}"\n'
        "send_first_listing = true\n"
    )
    harness.poll()
    return harness


def test_outbox_answers_about_what_does_not_exist(outboxed: Harness) -> None:
    """`drop 999`, `retry --sink nosuch`, `list --sink nosuch`: each says so and exits 1."""
    dropped = run("outbox", "drop", "999", cwd=outboxed.tmp)
    assert dropped.returncode == 1 and "no delivery 999" in dropped.stderr
    assert "0 deliveries dropped" in dropped.stdout
    retried = run("outbox", "retry", "--sink", "nosuch", cwd=outboxed.tmp)
    assert retried.returncode == 1
    assert "no sink named 'nosuch' (the sinks are: hook)" in retried.stderr
    listed = run("outbox", "list", "--sink", "nosuch", cwd=outboxed.tmp)
    assert listed.returncode == 1 and "no sink named 'nosuch'" in listed.stderr


def test_outbox_counts_and_refusals_read_as_english(outboxed: Harness) -> None:
    """'1 delivery dropped', '1 attempt', and a bodiless refusal shows its reason phrase."""
    listed = run("outbox", "list", "--status", "failed", cwd=outboxed.tmp)
    assert listed.returncode == 0, listed.stderr
    first = listed.stdout.splitlines()[0].split("\t")
    assert first[1:4] == ["hook", "failed", "1 attempt"]
    assert "\tHTTP 400 Bad Request\n" in listed.stdout
    dropped = run("outbox", "drop", first[0], cwd=outboxed.tmp)
    assert dropped.returncode == 0 and dropped.stdout.strip() == "1 delivery dropped"
    again = run("outbox", "drop", first[0], cwd=outboxed.tmp)
    assert again.returncode == 1
    assert f"delivery {first[0]} is dropped: only pending or failed ones are dropped" in (
        again.stderr
    )


def test_a_connection_failure_names_host_and_port(tmp_path: Path) -> None:
    """`check` of a URL nobody listens on says which host and port refused."""
    proc = run("check", "http://127.0.0.1:9/feed.xml", cwd=tmp_path)
    assert proc.returncode == 1
    assert "connection failed to 127.0.0.1:9" in proc.stderr


def test_add_keeps_the_port_in_the_name_and_names_a_duplicate(harness: Harness) -> None:
    """A default name keeps the port; adding the same feed again names the source it is."""
    harness.server.serve("/feed.xml", story.rss(0))
    url = harness.server.url("/feed.xml")
    port = url.split(":")[2].split("/")[0]
    first = run("add", url, cwd=harness.tmp)
    assert first.returncode == 0, first.stderr
    assert f"added feed source '127.0.0.1:{port}/feed.xml'" in first.stdout
    again = run("add", url, "--name", "other", cwd=harness.tmp)
    assert again.returncode == 1
    assert f"is already configured: it is source '127.0.0.1:{port}/feed.xml' (in " in again.stderr


def test_init_over_an_existing_config_says_why_it_is_the_one(tmp_path: Path) -> None:
    """init where ./aggregator.toml exists names it and why commands here use it."""
    (tmp_path / "aggregator.toml").write_text("# mine\n")
    proc = run("init", cwd=tmp_path)
    assert proc.returncode == 1
    assert "the config commands here already use" not in proc.stderr
    assert "aggregator.toml already exists (in this directory: the config every command" in (
        proc.stderr
    )


def test_init_writes_the_database_it_is_given(tmp_path: Path) -> None:
    """`init --config F --db PATH` writes the example with [storage] database = PATH."""
    target = tmp_path / "etc" / "config.toml"
    proc = run("init", "--config", str(target), "--db", "/var/lib/x/aggregator.db", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = target.read_text()
    assert 'database = "/var/lib/x/aggregator.db"' in text and "# [[sinks]]" in text
    assert run("config", "check", "--config", str(target), cwd=tmp_path).returncode == 0


def test_export_opml_writes_a_file_with_o(polled: Harness) -> None:
    """`export-opml -o FILE` writes the OPML there (as `digest -o` does)."""
    proc = run("export-opml", "-o", "subs.opml", cwd=polled.tmp)
    assert proc.returncode == 0, proc.stderr
    text = (polled.tmp / "subs.opml").read_text()
    assert text.startswith("<?xml") and text.count("<outline ") >= 2
    assert "wrote subs.opml: 2 sources" in proc.stderr
