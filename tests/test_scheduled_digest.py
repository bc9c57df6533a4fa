"""Scheduled digests: enqueued once per window through the outbox, never when nothing changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator import config as config_mod
from aggregator.digest.schedule import build_digest_jobs
from aggregator.errors import ConfigError
from aggregator.store import Store
from tests import fixed_db

DIGESTS = {
    "sinks": [{"kind": "stdout", "name": "desk"}],
    "digests": [{"name": "morning", "sink": "desk", "schedule": "0 13 * * *", "since": "12h"}],
}


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> Store:
    store = Store.open(fixed_db.build(tmp_path / "fixed.db"))
    yield store
    store.close()


def digest_rows(store: Store) -> list[dict]:
    rows = store.db.execute("SELECT payload FROM outbox WHERE type = 'digest'").fetchall()
    return [json.loads(r[0]) for r in rows]


def test_due_digest_is_enqueued_once_with_text_and_html(store: Store) -> None:
    """A run after changes enqueues one digest event; re-running the same window adds none."""
    [job] = build_digest_jobs(config_mod.parse(DIGESTS))
    now = datetime(2022, 3, 10, 13, 0, tzinfo=UTC)
    first = job.run(store, now)
    again = job.run(store, now)
    [payload] = digest_rows(store)
    assert first == again == payload["id"]
    assert payload["type"] == "digest" and payload["sink"] == "desk"
    assert payload["since"] == "2022-03-10 01:00:00.000"
    assert payload["until"] == "2022-03-10 13:00:00.000"
    assert "Talks end with" in payload["text"] and payload["text"].startswith("# Changes")
    assert payload["html"].startswith("<!DOCTYPE html>") and "<ins>" in payload["html"]
    assert "1 new" in payload["title"]  # the first listing's three stories are its baseline


def test_two_nodes_running_the_job_late_enqueue_one_digest(store: Store) -> None:
    """Runs a few seconds apart (two nodes, a late start) cover the same window: one event."""
    [job] = build_digest_jobs(config_mod.parse(DIGESTS))
    ids = {job.run(store, datetime(2022, 3, 10, 13, 0, s, tzinfo=UTC)) for s in (0, 1, 7, 40)}
    assert len(ids) == 1 and len(digest_rows(store)) == 1
    assert digest_rows(store)[0]["until"] == "2022-03-10 13:00:00.000"


def test_a_sink_that_takes_first_listings_gets_them_in_its_digests(store: Store) -> None:
    """The digest sink's send_first_listing brings the baseline's stories into its digests."""
    with_baseline = {
        "sinks": [{"kind": "stdout", "name": "desk", "send_first_listing": True}],
        "digests": DIGESTS["digests"],
    }
    [job] = build_digest_jobs(config_mod.parse(with_baseline))
    job.run(store, datetime(2022, 3, 10, 13, 0, tzinfo=UTC))
    [payload] = digest_rows(store)
    assert "4 new" in payload["title"]


def test_nothing_is_enqueued_when_nothing_changed(store: Store) -> None:
    """A window with no change enqueues nothing."""
    [job] = build_digest_jobs(config_mod.parse(DIGESTS))
    assert job.run(store, datetime(2022, 3, 20, 13, 0, tzinfo=UTC)) is None
    assert digest_rows(store) == []


def test_digest_jobs_carry_their_cron_trigger() -> None:
    """Each [[digests]] entry becomes a job with a UTC cron trigger firing when configured."""
    [job] = build_digest_jobs(config_mod.parse(DIGESTS))
    fire = job.trigger.get_next_fire_time(None, datetime(2022, 3, 10, 12, 0, tzinfo=UTC))
    assert job.id == "digest:morning" and fire == datetime(2022, 3, 10, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ({"sink": "x", "schedule": "0 25 * * *"}, "digests[0].schedule: invalid cron schedule"),
        ({"sink": "x", "format": "pdf"}, "digests[0].format: must be text or markdown"),
        ({"sink": "x", "sources": ["nope"]}, "digests[0].sources: no source named nope"),
        ({"schedule": "0 7 * * *"}, "digests[0].sink: required key is missing"),
    ],
)
def test_bad_digest_config_names_the_key(digest: dict, message: str) -> None:
    """A wrong [[digests]] entry is refused with its key path."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_mod.parse({"digests": [digest]})
