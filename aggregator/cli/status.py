"""``aggregator status``: what the daemon is doing now, read from the database."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from aggregator.cli.common import (
    common_options,
    database_location,
    found_config,
    handles_errors,
    plural,
)

if TYPE_CHECKING:
    from aggregator.config import Config

#: A source's heartbeat older than this many heartbeats: the daemon is not responding.
MISSED_BEATS = 3


@click.command("status")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handles_errors
def status_command(as_json: bool) -> None:
    """Show whether the daemon runs, what it polls now, and each source's schedule.

    Reads the database only (safe while the daemon runs): failing and gone
    sources first, then by next check. A source paused or removed in the config
    says so at once, before the daemon reloads it.
    """
    import json

    from aggregator.store import open_database
    from aggregator.store.scheduling import status_report

    config = found_config()
    db = open_database(database_location("read", config=config), readonly=True)
    try:
        report = status_report(db)
    finally:
        db.close()
    for source in report["sources"]:
        source["config_state"] = configured_state(source["name"], True, config)
    if as_json:
        # compact: json's C encoder (an indent makes it the pure-Python one, ~5x slower
        # on the 10,000 sources of a large deployment)
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    from aggregator.timeutil import utcnow

    now = utcnow()
    if report["nodes"]:
        lines = [node_line(node) for node in shown_nodes(report["nodes"])]
    else:
        lines = [daemon_line(report["daemon"])]
    lines += [sink_line(sink, now) for sink in report["sinks"] if sink["active"]]
    lines.append(report["summary"])
    lines += [source_line(source, now) for source in report["sources"]]
    click.echo("\n".join(lines))  # one write, however many sources


def configured_state(name: str, active: bool, config: Config | None) -> str | None:
    """``paused`` or ``removed`` as the config says now; ``None`` for a polled source.

    The database learns of a pause or a removal at the next poll (or daemon reload);
    the config says it at once. A feed's ``<name>/articles`` companion follows its feed.
    Without a config, the database's own ``active`` flag is all there is.
    """
    if config is None:
        return None if active else "removed"
    by_name = {s.name: s for s in config.sources}
    source = by_name.get(name)
    if source is None and name.endswith("/articles"):
        feed = by_name.get(name.removesuffix("/articles"))
        if feed is not None and feed.options.get("follow_links"):
            source = feed
    if source is None:
        return "removed"
    return None if source.enabled else "paused"


def daemon_line(daemon: dict[str, Any] | None) -> str:
    """``daemon: running (pid 42) since ..., heartbeat 3 s ago, network up; polling: a, b``."""
    from aggregator.housekeeping import HEARTBEAT
    from aggregator.store.scheduling import ago_text
    from aggregator.timeutil import from_db, utcnow

    if daemon is None:
        return "daemon: never ran on this database"
    beat = (utcnow() - from_db(daemon["heartbeat_at"])).total_seconds()
    state = daemon["state"]
    if state in ("running", "starting") and beat > MISSED_BEATS * HEARTBEAT:
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


def shown_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes running now and the ones not responding; else the last one that ran."""
    current = [n for n in nodes if n["state"] != "stopped"]
    return current or nodes[:1]


def node_line(node: dict[str, Any]) -> str:
    """``node vm (pid 42 on vm): running since ..., heartbeat 3 s ago, 12 sources in hand``."""
    from aggregator.store.scheduling import ago_text

    who = f"node {node['name']} (pid {node['pid']} on {node['host']})"
    beat = ago_text(node["heartbeat_at"])
    if node["state"] == "stopped":
        return f"{who}: stopped, last heartbeat {beat} (started {node['started_at']} UTC)"
    if not node["alive"]:
        return f"{who}: not responding, last heartbeat {beat} (its sources go to the others)"
    line = (
        f"{who}: {node['state']} since {node['started_at']} UTC, heartbeat {beat},"
        f" {plural(node['sources_in_hand'], 'source')} in hand, network {node['network']},"
        f" database {node['database']}"
    )
    if node["inflight"]:
        line += f"; polling now: {', '.join(node['inflight'][:10])}"
    return line


def sink_line(sink: dict[str, Any], now: datetime | None = None) -> str:
    """``sink hook [webhook]: 12 pending (3 in flight), oldest waiting 4s, 15.2 events/s ...``."""
    from aggregator.timeutil import from_db, utcnow

    text = f"sink {sink['sink']} [{sink['kind']}]: {sink['pending']} pending"
    if sink["in_flight"]:
        text += f" ({sink['in_flight']} in flight)"
    if sink["oldest_pending_at"]:
        age = ((now or utcnow()) - from_db(sink["oldest_pending_at"])).total_seconds()
        text += f", oldest waiting {_duration(max(0.0, age))}"
    text += f", {sink['delivered_last_minute'] / 60:.1f} events/s delivered over the last minute"
    if sink["retry_at"]:
        text += f"; down: next try {_when(sink['retry_at'], now)}"
    return text


def source_line(source: dict[str, Any], now: datetime | None = None) -> str:
    """One source: state, next check and why, interval, last error, moves."""
    name = source["name"]
    state = source.get("config_state")
    if state == "paused":
        text = f"  {name}: paused (enabled = false in the config); not polled"
    elif state == "removed":
        text = f"  {name}: removed from the config; not polled (its history stays)"
    elif source["gone_at"] and source["gone_url"] == source["url"]:
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
    from aggregator.timeutil import from_db, utcnow

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
