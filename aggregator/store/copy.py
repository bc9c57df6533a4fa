"""Move a whole SQLite history into an empty PostgreSQL database (``aggregator copy-to``).

Everything is copied under the same ids: sources (with their validators, ETag
and Last-Modified, and their planned checks, so a daemon on the copy carries on
with conditional requests), entries and their old keys, versions, changes, the
outbox with every sink's cursor, deliveries and their attempts, followed
articles, and the nodes' history. Claims and delivery leases are not copied
(nothing is in hand on a new database). Each table goes through ``COPY`` in one
transaction: a failure leaves the target as empty as it was.

The target must hold no aggregator rows (and no other tables). After the copy,
row counts are compared table by table, and a sample of rows of every table is
compared column by column.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.errors import StoreError
from aggregator.store import Store, connect, mask
from aggregator.store.db import Database

#: Tables in the order their foreign keys allow (entries' current version is set last).
TABLES = (
    "sources",
    "fetches",
    "entries",
    "versions",
    "changes",
    "entry_keys",
    "outbox",
    "sinks",
    "deliveries",
    "delivery_attempts",
    "followed_articles",
    "daemon_state",
    "nodes",
    "websub",
    "websub_seen",
)
#: Columns left out of the copy: held claims and leases, PostgreSQL's generated column.
_SKIP = {"search"}
_CLEARED = {
    ("sources", "claimed_by"), ("deliveries", "claimed_by"), ("deliveries", "lease_until"),
    ("websub", "busy_by"), ("websub", "busy_until"),
}  # fmt: skip
#: Rows read from SQLite at a time.
CHUNK = 2000
#: Rows per table compared after the copy.
SAMPLE = 200


@dataclass(slots=True)
class CopyReport:
    """What was copied, how long it took, and what the check found."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    sampled: int = 0
    total_seconds: float = 0.0


def copy_to_postgres(
    source: str | Path,
    target: str,
    *,
    progress: Callable[[str, int, float], None] | None = None,
) -> CopyReport:
    """Copy the SQLite database at ``source`` into the empty PostgreSQL database ``target``.

    Raises:
        StoreError: the source is missing, the target is not empty, a row does not
            fit, or the check after the copy finds a difference.
    """
    if not Path(source).is_file():
        raise StoreError(f"no database at {source}")
    started = time.monotonic()
    Store.open(source).close()  # migrated to the current schema first
    lite = connect(source, readonly=True)
    try:
        _refuse_unless_empty(target)
        Store.open(target).close()  # the schema, under the migration lock
        pg = connect(target)
        try:
            report = _copy_all(lite, pg, progress)
            report.sampled = verify(lite, pg, report)
            pg.execute("ANALYZE")  # the planner's statistics, before the first daemon reads
        finally:
            pg.close()
    finally:
        lite.close()
    report.total_seconds = time.monotonic() - started
    return report


def _refuse_unless_empty(target: str) -> None:
    db = connect(target)
    try:
        tables = db.table_names() - {"schema_migrations"}
        ours = [t for t in tables if t in TABLES]
        foreign = sorted(tables - set(TABLES) - {"change_log", "headline_history"})
        if foreign:
            raise StoreError(
                f"{mask(target)} is not empty (it has tables {', '.join(foreign[:5])}):"
                " copy into a new, empty database (CREATE DATABASE ...)"
            )
        for table in ours:
            count = db.value(f"SELECT count(*) FROM {table}")
            if count:
                raise StoreError(
                    f"{mask(target)} is not empty ({count} rows in {table}): copy into a new,"
                    " empty database; nothing was written"
                )
    finally:
        db.close()


def _columns(lite: Database, pg: Database, table: str) -> list[str]:
    theirs = set(pg.columns(table))
    return [c for c in lite.columns(table) if c in theirs and c not in _SKIP]


def _copy_all(
    lite: Database, pg: Database, progress: Callable[[str, int, float], None] | None
) -> CopyReport:
    report = CopyReport()
    conn = pg.conn  # type: ignore[attr-defined]
    with conn.transaction():
        indexes = _drop_indexes(pg)  # built once at the end: much faster than row by row
        for table in TABLES:
            clock = time.monotonic()
            columns = _columns(lite, pg, table)
            count = _copy_table(lite, conn, table, columns)
            report.rows[table] = count
            report.seconds[table] = time.monotonic() - clock
            if progress:
                progress(table, count, report.seconds[table])
        _link_current_versions(lite, conn)
        clock = time.monotonic()
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for statement in indexes:
            conn.execute(statement)
        report.seconds["indexes"] = time.monotonic() - clock
        if progress:
            progress("(indexes)", len(indexes), report.seconds["indexes"])
        for table in TABLES:
            if "id" in pg.columns(table) and table not in ("nodes", "daemon_state"):
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" COALESCE(max(id), 1), max(id) IS NOT NULL) FROM {table}"
                )
    return report


def _drop_indexes(pg: Database) -> list[str]:
    """Drop the secondary indexes of the empty tables; return the statements that make them."""
    found = pg.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND indexname LIKE 'idx\\_%'"
    ).fetchall()
    for name, _definition in found:
        pg.execute(f"DROP INDEX {name}")
    return [definition for _name, definition in found]


def _copy_table(lite: Database, conn: Any, table: str, columns: list[str]) -> int:
    """``COPY`` one table, chunk by chunk, in id order; returns the rows copied."""
    cleared = [i for i, c in enumerate(columns) if (table, c) in _CLEARED]
    current = columns.index("current_version_id") if table == "entries" else -1
    order = " ORDER BY id" if "id" in columns else ""
    cursor = lite.execute(f"SELECT {', '.join(columns)} FROM {table}{order}")
    count = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with conn.cursor() as pg_cursor, pg_cursor.copy(statement) as copy:
        while rows := cursor.fetchmany(CHUNK):
            for row in rows:
                if cleared or current >= 0:
                    row = list(row)
                    for i in [*cleared, current]:
                        if i >= 0:
                            row[i] = None
                copy.write_row(row)
            count += len(rows)
    return count


def _link_current_versions(lite: Database, conn: Any) -> None:
    """Set each entry's current version (the versions exist now)."""
    conn.execute("CREATE TEMP TABLE current_versions (id BIGINT, v BIGINT) ON COMMIT DROP")
    cursor = lite.execute(
        "SELECT id, current_version_id FROM entries WHERE current_version_id IS NOT NULL"
    )
    statement = "COPY current_versions (id, v) FROM STDIN"
    with conn.cursor() as pg_cursor, pg_cursor.copy(statement) as copy:
        while rows := cursor.fetchmany(CHUNK):
            for row in rows:
                copy.write_row(row)
    conn.execute(
        "UPDATE entries SET current_version_id = c.v FROM current_versions c"
        " WHERE entries.id = c.id"
    )


def verify(lite: Database, pg: Database, report: CopyReport) -> int:
    """Compare row counts, then a random sample of rows of each table, column by column.

    Returns how many rows were compared. Raises ``StoreError`` on the first difference.
    """
    rng = random.Random()
    compared = 0
    for table in TABLES:
        ours, theirs = report.rows[table], pg.value(f"SELECT count(*) FROM {table}")
        if ours != theirs:
            raise StoreError(f"{table}: {ours} rows in SQLite but {theirs} in PostgreSQL")
        columns = [c for c in _columns(lite, pg, table) if (table, c) not in _CLEARED]
        key = "id" if "id" in columns else columns[0]
        ids = [r[0] for r in lite.execute(f"SELECT {key} FROM {table}").fetchall()]
        for value in rng.sample(ids, min(SAMPLE, len(ids))):
            select = f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = ?"
            left = tuple(_as_stored(v) for v in lite.execute(select, [value]).fetchone())
            right = tuple(pg.execute(select, [value]).fetchone())
            if left != right:
                diff = [c for c, a, b in zip(columns, left, right, strict=True) if a != b]
                raise StoreError(f"{table} row {value} differs after the copy in {diff}")
            compared += 1
    return compared


def _as_stored(value: Any) -> Any:
    """A SQLite value as PostgreSQL holds it (text cannot hold NUL: U+FFFD instead)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value
