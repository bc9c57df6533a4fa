"""Shared fixtures: a real local HTTP server, config files and databases on disk."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator import config as config_mod
from aggregator.cli.common import register_plugins
from aggregator.cli.poll import poll_once
from aggregator.pipeline import PollResult
from tests import pg
from tests.server import TestServer

register_plugins()  # configs loaded by tests check their sources' and sinks' keys, as the CLI's

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (
        host.startswith("127.") or host in ("::1", "localhost") or self.family == socket.AF_UNIX
    ):
        raise OSError(f"tests may not reach the network ({host})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches beyond loopback."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(name="server")
def _server() -> Iterator[TestServer]:
    srv = TestServer().start()
    yield srv
    srv.stop()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return "'''" + str(value) + "'''" if "\\" in str(value) else '"' + str(value) + '"'


def write_config(path: Path, sources: list[dict[str, Any]], *, db: Path, extra: str = "") -> Path:
    """Write a TOML config with ``sources`` and the database at ``db``."""
    lines = [f'[storage]\ndatabase = "{db}"\n', extra]
    for source in sources:
        lines.append("[[sources]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in source.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def query_rows(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of ``sql`` (``?`` placeholders) on the database ``db`` (a file or a URL), as dicts."""
    if "://" in str(db):
        from aggregator.store.db import connect

        conn = connect(str(db))
        try:
            return conn.rows(sql, list(params))
        finally:
            conn.close()
    lite = sqlite3.connect(db)
    lite.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in lite.execute(sql, params)]
    finally:
        lite.close()


class Harness:
    """A config plus database in a temp dir, polled against the test server."""

    def __init__(self, tmp: Path, server: TestServer, database: Path | str | None = None) -> None:
        self.tmp = tmp
        self.server = server
        #: The database: a file (SQLite), or a PostgreSQL URL in the tests run on both.
        self.db_path: Path | str = database or tmp / "history.db"
        self.config_path = tmp / "aggregator.toml"
        self.sources: list[dict[str, Any]] = []
        self.extra = ""

    def add(self, name: str, path: str, **options: Any) -> None:
        self.sources.append({"name": name, "url": self.server.url(path), **options})

    def config(self) -> config_mod.Config:
        write_config(self.config_path, self.sources, db=self.db_path, extra=self.extra)
        return config_mod.load(self.config_path)

    def poll(self, *names: str) -> list[PollResult]:
        return asyncio.run(poll_once(self.config(), names))

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return query_rows(self.db_path, sql, params)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run a write (``?`` placeholders) on the test's database, either backend."""
        from aggregator.store.db import connect

        conn = connect(str(self.db_path))
        try:
            with conn.atomic():
                conn.execute(sql, list(params))
        finally:
            conn.close()

    @property
    def on_postgres(self) -> bool:
        return "://" in str(self.db_path)

    def changes(self) -> list[tuple[str, str, str]]:
        """(kind, entry key, fields JSON) of every change, in order."""
        return [
            (r["kind"], r["key"], r["fields"])
            for r in self.rows(
                "SELECT c.kind, e.key, c.fields FROM changes c JOIN entries e ON e.id = c.entry_id"
                " ORDER BY c.id"
            )
        ]


@pytest.fixture(name="backend")
def _backend(request: pytest.FixtureRequest) -> str:
    """``sqlite``, or each backend a module lists in ``BACKENDS`` (see pytest_generate_tests)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(name="database")
def _database(backend: str, tmp_path: Path) -> Path | str:
    """Where a test's history lives: a new SQLite file, or a new PostgreSQL database."""
    if backend == "postgresql":
        return pg.server().fresh()
    return tmp_path / "history.db"


@pytest.fixture(name="harness")
def _harness(tmp_path: Path, server: TestServer, database: Path | str) -> Harness:
    return Harness(tmp_path, server, database)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with ``BACKENDS = ("sqlite", "postgresql")`` runs its tests on each backend."""
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends, indirect=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the PostgreSQL server the session started, if any."""
    pg.stop_server()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--runslow`` runs the longer variants marked ``slow``."""
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow`` tests, with the reason shown, unless ``--runslow`` is given."""
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow variant: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
