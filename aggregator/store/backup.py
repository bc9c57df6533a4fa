"""A consistent copy of the database while the daemon writes (``aggregator backup``).

The copy is made with SQLite's ``VACUUM INTO`` on a read-only connection: one
read transaction, so the copy is the database as of one instant (WAL mode lets
the daemon keep writing meanwhile), written compactly (no free pages, indexes
rebuilt in order), in one statement. SQLite's online backup API would copy
pages, free ones included, and restarts its copy when another process writes
between its steps, which a busy daemon does all the time.

The copy is written next to the target under a temporary name, checked with
``PRAGMA quick_check``, then renamed over the target, so a failed or
interrupted backup never leaves a half-written file under the target's name.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from aggregator.errors import StoreError
from aggregator.store import open_database


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a backup wrote."""

    path: Path
    bytes: int
    check: str  # what ``PRAGMA quick_check`` said of the copy: "ok"


def backup(source: str | Path, target: str | Path) -> BackupResult:
    """Copy the database at ``source`` to ``target`` (replaced if it exists).

    Raises:
        StoreError: the source cannot be read, the copy cannot be written, or the
            copy fails its check (then nothing is left at ``target``'s name).
    """
    from aggregator.store.db import is_postgres, mask

    if is_postgres(source):
        raise StoreError(
            f"{mask(source)} is PostgreSQL: back it up with pg_dump (or point-in-time recovery);"
            " see docs/postgresql.md, Backups. `aggregator backup` copies an SQLite file"
        )
    source, target = Path(source), Path(target)
    if not source.exists():
        raise StoreError(f"no database at {source}")
    if target.exists() and target.resolve() == source.resolve():
        raise StoreError(f"{target} is the database itself; back it up to another file")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    db = open_database(source, readonly=True)
    try:
        db.execute("VACUUM INTO ?", [str(partial)])
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot back up {source} to {target}: {exc}") from exc
    finally:
        db.close()
    check = _quick_check(partial)
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise StoreError(f"the copy of {source} failed its check ({check}); nothing was written")
    partial.replace(target)
    return BackupResult(target, target.stat().st_size, check)


def _quick_check(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA quick_check"))
    finally:
        conn.close()
