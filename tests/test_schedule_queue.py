"""The daemon's queue of planned checks (the trigger of its single ``sources`` job)."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregator.schedule_queue import IDLE, RETRY, DueQueue

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T = NOW.timestamp()


def test_due_plans_become_ready_and_the_next_fire_is_the_next_plan() -> None:
    """Plans due now are handed over; then the job fires next at the earliest later plan."""
    queue = DueQueue()
    queue.plan("a", T - 1)
    queue.plan("b", T)
    queue.plan("c", T + 5)
    # while handed-over checks wait for the job, it looks again within RETRY seconds
    assert queue.get_next_fire_time(None, NOW) == datetime.fromtimestamp(T + RETRY, UTC)
    assert sorted(queue.pop_ready()) == ["a", "b"]
    assert len(queue) == 1 and "c" in queue
    assert queue.get_next_fire_time(NOW, NOW) == datetime.fromtimestamp(T + 5, UTC)


def test_replanned_or_forgotten_sources_fire_only_per_their_latest_plan() -> None:
    """Re-planning keeps only the newest plan; a forgotten source is never handed over."""
    queue = DueQueue()
    queue.plan("a", T - 10)
    queue.plan("a", T + 60)
    queue.plan("gone", T - 5)
    queue.forget("gone")
    queue.take_due(T)
    assert queue.pop_ready() == []
    assert queue.next_due() == T + 60
    queue.take_due(T + 60)
    assert queue.pop_ready() == ["a"]


def test_next_fire_time_is_always_after_now() -> None:
    """The trigger never answers a time at or before now (APScheduler would loop on it)."""
    queue = DueQueue()
    assert queue.get_next_fire_time(None, NOW) == datetime.fromtimestamp(T + IDLE, UTC)
    queue.plan("a", T + 1e-7)
    assert queue.get_next_fire_time(None, NOW) > NOW
    queue.plan("b", T)
    fire = queue.get_next_fire_time(NOW, NOW)
    assert fire is not None and NOW < fire <= datetime.fromtimestamp(T + 1, UTC)
