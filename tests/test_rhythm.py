"""The learned schedule's pure parts: the rate estimator, the budget allocation, the hints."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator import schedule_policy as p
from aggregator.rhythm import DAY, HOUR, Rhythm
from aggregator.rhythm_plan import Book, ChangeRow, VisitRow, next_check, solve
from aggregator.store import SourceSpec, Store
from aggregator.store import rhythm as history

T0 = datetime(2025, 3, 3, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
RNG = random.Random(5)


def poisson(rate_per_day: float, days: float, rng: random.Random) -> list[float]:
    """Event times of a Poisson process from T0."""
    times, t = [], T0
    while True:
        t += rng.expovariate(rate_per_day / DAY)
        if t >= T0 + days * DAY:
            return times
        times.append(t)


def fed(times: list[float], every: float, end: float, dated: bool = True) -> Rhythm:
    """A rhythm that visited every ``every`` seconds until ``end`` and saw ``times``."""
    rhythm = Rhythm(since=T0, ref=T0, visit_since=T0, fresh=False)
    i, t = 0, T0 + every
    while t <= end:
        dates = []
        while i < len(times) and times[i] <= t:
            dates.append(times[i] if dated else None)
            i += 1
        rhythm.observe(t, dates)
        t += every
    return rhythm


def test_rate_from_entry_dates_matches_the_posting_rate() -> None:
    """Forty items a day for ten days are estimated at forty a day (within 10 %)."""
    rhythm = fed(poisson(40, 10, RNG), 600, T0 + 10 * DAY)
    assert rhythm.rate(prior=1 / 600) * DAY == pytest.approx(40, rel=0.1)


def test_a_new_source_starts_at_its_prior_and_its_entries_dates() -> None:
    """Without history the rate is the prior; a first visit's backlog of dates sets it instead."""
    empty = Rhythm(since=T0, ref=T0, visit_since=T0)
    assert empty.rate(prior=1 / 900) == pytest.approx(1 / 900)
    backlog = [T0 - k * HOUR for k in range(1, 25)]  # 24 items, one an hour, before we came
    rhythm = Rhythm(since=T0, ref=T0, visit_since=T0)
    rhythm.observe(T0, backlog)
    assert rhythm.since < T0 - 18 * HOUR
    assert rhythm.rate(prior=1 / 900) * DAY == pytest.approx(24, rel=0.25)


def test_cho_garcia_molina_estimates_edits_from_changed_or_not_visits() -> None:
    """Edits at 1 an hour, seen only as "changed or not" at 30-minute visits, give ~1 an hour.

    Counting changed visits would say 0.79 an hour (several edits between visits look
    like one); the estimator corrects for that.
    """
    rhythm = Rhythm(since=T0, ref=T0, visit_since=T0, fresh=False)
    chance = 1 - math.exp(-0.5)  # at least one edit in 30 minutes at 1 an hour
    changed = 0
    for k in range(1, 2001):
        edited = RNG.random() < chance
        changed += edited
        rhythm.observe(T0 + k * 1800, (), edits=int(edited))
    naive = changed / (2000 * 0.5)
    assert naive < 0.85
    assert rhythm.edit_rate() * HOUR == pytest.approx(1.0, rel=0.12)


def test_hour_of_day_profile_appears_with_history() -> None:
    """A source posting only from 08:00 to 18:00 UTC is rated busy at noon and quiet at 03:00."""
    times = [t for t in poisson(120, 21, RNG) if 8 <= (t % DAY) / HOUR < 18]
    shape = fed(times, 600, T0 + 21 * DAY).profile()
    assert shape.hours[12] > 1.8
    assert shape.hours[3] < 0.3
    early = fed(times[:3], 600, T0 + 0.5 * DAY).profile()  # three events: little evidence
    assert max(early.hours) < 1.6


def test_bursts_raise_the_rate_after_an_event_and_poisson_does_not() -> None:
    """Clustered posts give a burst rate; the same number spread evenly gives (almost) none."""
    bursts = []
    for day in range(14):
        start = T0 + day * DAY + RNG.uniform(0, 20 * HOUR)
        bursts += sorted(start + RNG.uniform(0, 1800) for _ in range(10))
    bursty = fed(sorted(bursts), 300, T0 + 14 * DAY).profile()
    even = fed(poisson(10, 14, RNG), 300, T0 + 14 * DAY).profile()
    assert bursty.burst * HOUR > 2  # about 4.5 more posts in the hour after a post
    assert even.burst * HOUR < 0.5
    assert 0.0 < bursty.burst_share < 0.2


def test_a_source_that_stops_is_cut_before_its_history_fades() -> None:
    """Two quiet days after a steady 50 a day scale the rate down; a quiet hour does not."""
    rhythm = fed(poisson(50, 10, RNG), 600, T0 + 10 * DAY)
    last = rhythm.last_event
    assert last is not None
    rate = rhythm.rate(prior=1 / 600)
    assert rhythm.stale(last + HOUR, rate) == 1.0
    assert rhythm.stale(last + 2 * DAY, rate) < 0.1


def test_undo_takes_an_observation_back_exactly() -> None:
    """Observe then undo leaves the counts as they were (the database's copy replaces it)."""
    rhythm = fed(poisson(20, 3, RNG), 600, T0 + 3 * DAY)
    rhythm.advance(T0 + 3 * DAY + 60)
    before = (rhythm.news, rhythm.edits, rhythm.visits, rhythm.pairs, *(rhythm.hours or []))
    undo = rhythm.observe(T0 + 3 * DAY + 60, [T0 + 3 * DAY + 30, None], edits=2)
    rhythm.undo(undo)
    after = (rhythm.news, rhythm.edits, rhythm.visits, rhythm.pairs, *(rhythm.hours or []))
    assert after == pytest.approx(before)


def test_refresh_replaces_this_nodes_count_with_the_databases_rows() -> None:
    """A poll counted in memory and then read back from the database is counted once."""
    bounds = p.learned_bounds(600.0)
    mine, other = Book(), Book()
    for book in (mine, other):
        book.add("s", bounds, T0, fresh=False)
    at = T0 + 3600
    mine.observe("s", at, [at - 100, at - 50], 1)
    rows = [ChangeRow("s", "new", at + 1, at - 100, 1), ChangeRow("s", "new", at + 1, at - 50, 1),
            ChangeRow("s", "changed", at + 1, None, 1)]  # fmt: skip
    visits = [VisitRow("s", 1, at, at)]
    mine.refresh(rows, visits, at + 600)
    other.refresh(rows, visits, at + 600)
    a, b = mine.rhythms["s"], other.rhythms["s"]
    assert (a.news, a.edits, a.visits) == pytest.approx((b.news, b.edits, b.visits))
    assert a.news == pytest.approx(2, rel=0.01)


def test_allocation_spends_the_budget_by_square_root_of_rates() -> None:
    """A source changing 100x as often is polled about 10x as often; the total is the budget."""
    book = Book()
    for name, rate in (("busy", 100), ("slow", 1)):
        book.add(name, p.learned_bounds(900.0, 60.0, 86400.0), T0, fresh=False)
        rhythm = book.rhythms[name]
        for k in range(int(rate * 30)):
            rhythm.observe(T0 + (k + 0.5) * DAY / rate, [T0 + (k + 0.5) * DAY / rate])
    now = T0 + 30 * DAY
    for rhythm in book.rhythms.values():
        rhythm.advance(now)
        rhythm.last_event = now  # neither is stale
    book.allocate(now)
    busy, slow = book.delay("busy", now)[0], book.delay("slow", now)[0]
    assert slow / busy == pytest.approx(10, rel=0.15)
    assert 1 / busy + 1 / slow == pytest.approx(book.budget(), rel=0.05)


def test_allocation_keeps_each_source_within_its_bounds() -> None:
    """A budget past what the bounds allow stops the hot source at min_interval; one below
    what max_interval needs leaves every source at max_interval."""
    for per_day, hot_wait, still_wait in ((5000, 120, None), (1, 3600, 3600)):
        book = Book(requests_per_day=per_day)
        book.add("hot", p.learned_bounds(600.0, 120.0, 3600.0), T0, fresh=False)
        book.add("still", p.learned_bounds(600.0, 120.0, 3600.0), T0, fresh=False)
        for k in range(5000):
            book.rhythms["hot"].observe(T0 + k * 60, [T0 + k * 60])
        now = T0 + 5000 * 60
        book.rhythms["still"].advance(now)
        book.allocate(now)
        assert book.delay("hot", now)[0] == pytest.approx(hot_wait, rel=0.01)
        if still_wait is not None:
            assert book.delay("still", now)[0] == pytest.approx(still_wait, rel=0.01)


def test_solve_meets_the_target_or_stops_at_the_ends() -> None:
    """The scale meets the target; below the least spend it is 0; above the most, large."""
    spend = lambda c: min(5.0, max(1.0, 2 * c))  # noqa: E731
    assert spend(solve(spend, 3.0)) == pytest.approx(3.0, rel=1e-3)
    assert solve(spend, 0.5) == 0.0
    assert spend(solve(spend, 9.0)) == 5.0


def test_overspending_lowers_the_next_target() -> None:
    """Folded visits beyond the budget lower the correction; fewer raise it."""
    for visits, lower in ((400, True), (10, False)):
        book = Book()
        book.add("s", p.learned_bounds(600.0), T0, fresh=False)
        book.refresh([], [], T0)
        book.refresh([], [VisitRow("s", visits, T0, T0 + DAY)], T0 + DAY)
        assert (book.correction < 1.0) is lower


NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)  # a Monday


def learned(delay: float) -> tuple[float, str]:
    return delay, "learned: test"


def plan(obs: p.Observation, delay: float = 300.0, current: float | None = None) -> p.Decision:
    return next_check(
        "learned", p.learned_bounds(600.0), current, obs,
        now=NOW, network_down=False, rng=random.Random(1), learned=lambda: learned(delay),
    )  # fmt: skip


def test_publisher_hints_bound_the_learned_schedule() -> None:
    """ttl, max-age and Retry-After are floors, sy:updatePeriod one up to the interval; the
    reason names the hint."""
    assert plan(p.Observation(ok=True)).reason == "learned: test"
    for obs, why in (
        (p.Observation(ok=True, ttl=3600), "RSS ttl"),
        (p.Observation(ok=True, max_age=3600), "Cache-Control/Expires"),
        (p.Observation(ok=True, retry_after=3600), "Retry-After"),
    ):
        decision = plan(obs)
        assert 3600 <= decision.delay <= 3600 * 1.1
        assert decision.reason == f"publisher asked ({why})"
    # sy:updatePeriod (WordPress says "hourly" whatever the site does) stops at the interval
    announced = plan(p.Observation(ok=True, update_period=3600), delay=100.0)
    assert 600 <= announced.delay <= 660
    assert announced.reason == "publisher asked (sy:updatePeriod)"


def test_skip_hours_and_days_and_an_ended_feed_bound_the_learned_schedule() -> None:
    """A check never lands in a skipped hour or day; an ended feed waits max_interval."""
    monday_noon = plan(p.Observation(ok=True, skip_hours=frozenset({12, 13})))
    assert monday_noon.delay >= 2 * 3600 - 1
    skipped = plan(p.Observation(ok=True, skip_days=frozenset({0})))  # Monday
    assert skipped.delay >= 12 * 3600 - 1  # to Tuesday 00:00
    ended = plan(p.Observation(ok=True, ended="JSON Feed expired"))
    assert ended.delay >= p.learned_bounds(600.0).max_interval
    assert ended.reason == "JSON Feed expired"


def test_learned_waits_stay_in_bounds_and_grow_gradually() -> None:
    """Below min_interval is raised to it; a wait at most doubles from one poll to the next."""
    bounds = p.learned_bounds(600.0)
    assert plan(p.Observation(ok=True), delay=1.0).delay >= bounds.min_interval
    assert plan(p.Observation(ok=True), delay=9000.0, current=600.0).delay <= 1200 * 1.1


def test_failures_back_off_as_before_under_the_learned_schedule() -> None:
    """A failed poll uses the backoff (and a 410 stops), whatever the learned delay."""
    failed = plan(p.Observation(ok=False, status=500, failures=3), current=600.0)
    assert failed.reason == "backoff after 3 failures"
    assert failed.delay >= 2400
    assert plan(p.Observation(ok=False, status=410, failures=1)).gone


def test_history_pages_return_every_change_once(tmp_path: Path) -> None:
    """Keyset pages over changes with tied detection times miss none and repeat none."""
    store = Store.open(tmp_path / "h.db")
    try:
        [source_id] = store.sync_sources([SourceSpec("s", "feed", "http://x.test/f", 600)]).values()
        db = store.db
        with db.atomic():
            db.execute(
                "INSERT INTO entries (id, source_id, key, published_at, first_seen_at,"
                " last_seen_at) VALUES (1, ?, 'k', '2025-03-03 00:00:00.000', 'x', 'x')",
                [source_id],
            )
            for i in range(2 * history.PAGE + 3):
                db.execute(
                    "INSERT INTO changes (source_id, entry_id, kind, detected_at)"
                    " VALUES (?, 1, ?, ?)",
                    [
                        source_id,
                        "new" if i % 3 else "changed",
                        f"2025-03-03 00:{i // 420:02d}:{i // 7 % 60:02d}.000",
                    ],
                )
        seen, after = [], None
        while True:
            page = history.changes_between(db, "2025-03-03", "2025-03-04", after)
            seen += page
            if len(page) < history.PAGE:
                break
            after = page[-1].key
        assert len(seen) == 2 * history.PAGE + 3
        assert len({r.id for r in seen}) == len(seen)
        assert [r.key for r in seen] == sorted(r.key for r in seen)
        assert {r.published_at for r in seen if r.kind == "new"} == {"2025-03-03 00:00:00.000"}
        assert {r.published_at for r in seen if r.kind == "changed"} == {None}
    finally:
        store.close()
