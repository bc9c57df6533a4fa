"""``aggregator status``: what the daemon is doing now, read from the database."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from aggregator.cli.common import database_path, fail, handles_errors, reader_options
from aggregator.housekeeping import HEARTBEAT
from aggregator.store import open_database
from aggregator.store.scheduling import ago_text, status_report
from aggregator.timeutil import from_db, utcnow


@click.command("status")
@reader_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handles_errors
def status_command(config_path: str | None, database: str | None, as_json: bool) -> None:
    """Show whether the daemon runs, what it polls now, and each source's schedule.

    Reads the database only (safe while the daemon runs): failing and gone
    sources first, then by next check.
    """
    path = Path(database_path(config_path, database))
    if not path.exists():
        fail(f"no database at {path}: run `aggregator poll` or `aggregator run` first")
    db = open_database(path, readonly=True)
    try:
        report = status_report(db)
    finally:
        db.close()
    if as_json:
        # compact: json's C encoder (an indent makes it the pure-Python one, ~5x slower
        # on the 10,000 sources of a large deployment)
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    now = utcnow()
    lines = [daemon_line(report["daemon"]), report["summary"]]
    lines += [source_line(source, now) for source in report["sources"]]
    click.echo("\n".join(lines))  # one write, however many sources


def daemon_line(daemon: dict[str, Any] | None) -> str:
    """``daemon: running (pid 42) since ..., heartbeat 3 s ago, network up; polling: a, b``."""
    if daemon is None:
        return "daemon: never ran on this database"
    beat = (utcnow() - from_db(daemon["heartbeat_at"])).total_seconds()
    state = daemon["state"]
    if state in ("running", "starting") and beat > 3 * HEARTBEAT:
        state = f"not responding (last heartbeat {ago_text(daemon['heartbeat_at'])})"
    if daemon["state"] == "stopped":
        return (
            f"daemon: stopped at {daemon['heartbeat_at']} UTC"
            f" (pid {daemon['pid']}, started {daemon['started_at']} UTC)"
        )
    line = f"daemon: {state} (pid {daemon['pid']}) since {daemon['started_at']} UTC"
    if daemon["state"] == "running":
        line += f", heartbeat {ago_text(daemon['heartbeat_at'])}, network {daemon['network']}"
        if daemon["inflight"]:
            line += f"; polling now: {', '.join(daemon['inflight'])}"
    return line


def source_line(source: dict[str, Any], now: datetime | None = None) -> str:
    """One source: state, next check and why, interval, last error, moves."""
    name = source["name"]
    if source["gone_at"] and source["gone_url"] == source["url"]:
        text = f"  {name}: GONE since {source['gone_at']} (HTTP 410); polling stopped"
    else:
        state = (
            f"failing x{source['consecutive_failures']}" if source["consecutive_failures"] else "ok"
        )
        text = f"  {name}: {state}, next check {_when(source['next_check_at'], now)}"
        if source["schedule_reason"]:
            text += f" ({source['schedule_reason']})"
        if source["interval_now_seconds"]:
            text += f", every {_duration(source['interval_now_seconds'])}"
    if source["consecutive_failures"] and source["last_error"]:
        text += f"\n      last error: {source['last_error']}"
    if source["moved_from"]:
        text += f"\n      moved permanently from {source['moved_from']} on {source['moved_at']}"
    return text


def _when(moment: str | None, now: datetime | None = None) -> str:
    if not moment:
        return "not planned"
    seconds = (from_db(moment) - (now or utcnow())).total_seconds()
    return "due now" if seconds <= 0 else f"in {_duration(seconds)}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


COMMANDS = [status_command]
