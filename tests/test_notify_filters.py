"""Per-sink filters, batching and quiet hours, observed through real jsonl sink files."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from aggregator import config as config_mod
from aggregator.notify.filters import Filter
from tests import story
from tests.conftest import Harness


def jsonl_sinks(harness: Harness, sinks: dict[str, str]) -> None:
    """One jsonl sink per name, each with its filter lines (TOML)."""
    harness.extra = "".join(
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "jsonl"\nname = "{name}"\npath = "{harness.tmp / name}.jsonl"\n{keys}\n'
        for name, keys in sinks.items()
    )


def received(harness: Harness, name: str) -> list[tuple[str, str]]:
    """(kind, entry key) of each event the sink ``name`` wrote."""
    path = harness.tmp / f"{name}.jsonl"
    if not path.exists():
        return []
    events = [json.loads(x) for x in path.read_text().splitlines()]
    return [(e.get("kind", e["type"]), e.get("entry", {}).get("key", "")) for e in events]


def poll_epochs(harness: Harness, *epochs: int) -> None:
    for epoch in epochs:
        harness.server.serve("/feed.xml", story.rss(epoch))
        harness.poll()


def test_each_sink_gets_only_what_its_filters_accept(harness: Harness) -> None:
    """kinds, sources, keywords, regex, headline_only and min_words each select events."""
    harness.add("world", "/feed.xml")
    harness.add("other", "/other.xml")
    harness.server.serve("/other.xml", story.rss(4))
    jsonl_sinks(
        harness,
        {
            "all": "",
            "removals": 'kinds = ["removed", "restored"]',
            "other_only": 'sources = ["other"]',
            "ceasefire": 'sources = ["world"]\nkeywords = ["CEASEFIRE"]',
            "regex": 'sources = ["world"]\nregex = "hospital|corridors? must"',
            "headlines": 'sources = ["world"]\nkinds = ["changed"]\nheadline_only = true',
            "big_edits": 'sources = ["world"]\nkinds = ["changed"]\nmin_words = 8',
            "tiny_edits_dropped": 'sources = ["world"]\nkinds = ["changed"]\nmin_words = 40',
        },
    )
    poll_epochs(harness, 0, 1, 2, 3)
    assert len(received(harness, "all")) == 12  # 9 world events + 3 other
    assert received(harness, "removals") == [("removed", "corridors"), ("restored", "corridors")]
    assert received(harness, "other_only") == [
        ("new", "hospital"), ("new", "talks"), ("new", "corridors"),
    ]  # fmt: skip
    # "ceasefire" is in the markets text and in both talks titles after the retitle
    assert received(harness, "ceasefire") == [
        ("new", "markets"), ("changed", "talks"), ("changed", "talks"),
    ]  # fmt: skip
    # the corridors text holds "corridors must" from the edit on; the removal carries it too
    assert received(harness, "regex") == [
        ("new", "hospital"), ("changed", "corridors"), ("removed", "corridors"),
        ("restored", "corridors"),
    ]  # fmt: skip
    assert received(harness, "headlines") == [("changed", "talks")]  # the retitle only
    assert received(harness, "big_edits") == [
        ("changed", "talks"), ("changed", "corridors"), ("changed", "talks"),
    ]  # fmt: skip
    assert received(harness, "tiny_edits_dropped") == []


def test_a_sink_added_later_gets_only_later_events(harness: Harness) -> None:
    """A sink first configured after some polls does not receive the earlier history."""
    harness.add("world", "/feed.xml")
    jsonl_sinks(harness, {"first": ""})
    poll_epochs(harness, 0, 1)
    jsonl_sinks(harness, {"first": "", "late": ""})
    poll_epochs(harness, 2)
    assert received(harness, "late") == [("changed", "talks"), ("removed", "corridors")]
    assert len(received(harness, "first")) == 8


def test_batching_folds_changes_per_story_into_one_event(harness: Harness) -> None:
    """With batch, a story's changes within the window arrive as one event listing them all."""
    harness.add("world", "/feed.xml")
    jsonl_sinks(harness, {"batched": 'batch = "1500ms"'})
    poll_epochs(harness, 0, 1, 2)
    assert received(harness, "batched") == []  # still inside the window
    # every story's window (1.5 s from its first event) has closed 1.6 s after the last poll
    time.sleep(1.6)
    poll_epochs(harness, 2)
    lines = (harness.tmp / "batched.jsonl").read_text().splitlines()
    events = {e["entry"]["key"]: e for e in map(json.loads, lines)}
    assert sorted(events) == ["corridors", "hospital", "markets", "talks"]
    talks = events["talks"]
    assert talks["kind"] == "new" and len(talks["folded"]) == 3
    assert talks["title"] == {"before": None, "after": story.TALKS_1.title}
    assert talks["version"] == {"before": None, "after": 3}
    outbox = [r["event_id"] for r in harness.rows("SELECT event_id FROM outbox ORDER BY id")]
    assert set(talks["folded"]) <= set(outbox)
    assert len(events["corridors"]["folded"]) == 3  # new, changed, removed
    assert "folded" not in events["markets"]  # a single event goes out as it is
    state = harness.rows("SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status")
    assert state == [{"status": "delivered", "n": 4}]


def test_quiet_hours_hold_events_until_they_end() -> None:
    """An event created inside quiet hours is due when they end (spanning midnight, local zone)."""
    sink = config_mod.SinkConfig(kind="stdout", quiet_hours="22:00-07:00", timezone="Europe/Berlin")
    quiet = Filter(sink)
    late = datetime(2022, 3, 10, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    assert quiet.due(late) == datetime(2022, 3, 11, 6, 0, tzinfo=UTC)  # 07:00 Berlin
    early = datetime(2022, 3, 11, 4, 0, tzinfo=UTC)  # 05:00 Berlin
    assert quiet.due(early) == datetime(2022, 3, 11, 6, 0, tzinfo=UTC)
    noon = datetime(2022, 3, 11, 11, 0, tzinfo=UTC)
    assert quiet.due(noon) == noon
