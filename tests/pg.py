"""A throw-away PostgreSQL server for the tests, on a Unix socket in a temporary directory.

``PgServer.start()`` runs Debian's ``initdb`` and ``pg_ctl`` (as the ``postgres`` user
when the tests run as root: ``initdb`` refuses root), listening on no TCP port. Each
test gets a database of its own, copied from a template that is migrated once, so a
test starts on the current schema in milliseconds. Where no server can be started, the
tests that need one skip with the reason, and fail under ``CI=true``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: Where Debian's PostgreSQL 15 keeps its programs (``$AGGREGATOR_PG_BIN`` overrides).
PG_BIN = Path(os.environ.get("AGGREGATOR_PG_BIN", "/usr/lib/postgresql/15/bin"))
TEMPLATE = "aggregator_template"
#: A role that must log in with a password (the others are trusted on the socket).
PASSWORD_USER, PASSWORD = "pwuser", "correct-horse-battery"


class PgUnavailable(Exception):
    """No PostgreSQL server could be started here (the reason is the message)."""


class PgServer:
    """One cluster for the test session."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aggregator-pg-"))
        self.data = self.dir / "data"
        self.user = "agg"
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0

    @property
    def socket_dir(self) -> str:
        return str(self.dir)

    def url(self, database: str) -> str:
        """The URL of ``database`` on this server (Unix socket, no password)."""
        return f"postgresql://{self.user}@/{database}?host={self.dir}"

    def start(self) -> PgServer:
        if not (PG_BIN / "initdb").exists():
            raise PgUnavailable(
                f"no PostgreSQL at {PG_BIN} (apt-get install postgresql-15, or set"
                " AGGREGATOR_PG_BIN)"
            )
        if self._as_postgres:
            shutil.chown(self.dir, "postgres")
        self.dir.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8")
        hba = self.data / "pg_hba.conf"  # one role must give a password (tests of a wrong one)
        hba.write_text(f"local all {PASSWORD_USER} scram-sha-256\n" + hba.read_text())
        options = (
            f"-k {self.dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o", options,
            "start",
        )  # fmt: skip
        self.create(TEMPLATE)
        from aggregator.store import Store

        Store.open(self.url(TEMPLATE)).close()
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        return self

    def create(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a database (empty, or a copy of ``template``); return its URL."""
        import psycopg

        name = name or f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            copy = f" TEMPLATE {template}" if template else ""
            conn.execute(f"CREATE DATABASE {name}{copy}")
        return self.url(name)

    def fresh(self) -> str:
        """A new database on the current schema (a copy of the migrated template)."""
        return self.create(template=TEMPLATE)

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop the server (fast) and start it again, as an operator's restart would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        options = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o", options,
            "start",
        )  # fmt: skip

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [str(PG_BIN / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise PgUnavailable(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")


_SERVER: PgServer | None = None
_FAILURE: str | None = None


def server() -> PgServer:
    """The session's server, started on first use (skip, or fail under CI, if it cannot be)."""
    global _SERVER, _FAILURE
    if _SERVER is None and _FAILURE is None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _FAILURE = "psycopg is not installed (pip install -e '.[test]')"
        else:
            try:
                _SERVER = PgServer().start()
            except (PgUnavailable, OSError, subprocess.SubprocessError) as exc:
                _FAILURE = str(exc)
    if _SERVER is None:
        message = f"PostgreSQL tests need a local server: {_FAILURE}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return _SERVER


def stop_server() -> None:
    """Stop the session's server, if one was started."""
    if _SERVER is not None:
        _SERVER.stop()
