"""The scheduling policy as pure functions: backoff, publisher floors, adaptivity, outages."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from aggregator import schedule_policy as p
from aggregator.fetch import parse_retry_after

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
B = p.default_bounds(600.0, max_backoff=6 * 3600.0)


def test_backoff_doubles_per_failure_up_to_the_cap_and_never_below_interval() -> None:
    """Consecutive failures wait 1x, 2x, 4x ... the interval, capped at max_backoff."""
    waits = [
        p.decide(B, None, p.Observation(ok=False, status=500, failures=n), network_down=False).delay
        for n in range(1, 9)
    ]
    assert waits == [600, 1200, 2400, 4800, 9600, 19200, 21600, 21600]
    tiny_cap = p.default_bounds(600.0, max_backoff=60.0)
    assert p.backoff(tiny_cap, 5) == 600


def test_success_after_failures_returns_to_the_normal_interval() -> None:
    """Recovery: the first success is scheduled at the adaptive interval, not the backoff."""
    failed = p.decide(B, 600, p.Observation(ok=False, status=503, failures=6), network_down=False)
    assert failed.delay == 19200 and failed.reason.startswith("backoff after 6 failures")
    ok = p.decide(B, failed.interval, p.Observation(ok=True), network_down=False)
    assert ok.delay == 750 and ok.reason == "quiet"


def test_retry_after_longer_than_backoff_wins_shorter_does_not() -> None:
    """429/503 Retry-After is honoured when longer than our own backoff, and capped at a week."""
    long = p.Observation(ok=False, status=429, retry_after=7200, failures=1)
    assert p.decide(B, None, long, network_down=False).delay == 7200
    short = p.Observation(ok=False, status=503, retry_after=5, failures=1)
    assert p.decide(B, None, short, network_down=False).delay == 600
    absurd = p.Observation(ok=False, status=503, retry_after=1e12, failures=1)
    assert p.decide(B, None, absurd, network_down=False).delay == p.HINT_CAP


def test_retry_after_http_date_form_is_parsed() -> None:
    """Retry-After as an HTTP-date gives the seconds until then; a bad value gives None."""
    moment = datetime.now(UTC) + timedelta(seconds=120)
    seconds = parse_retry_after(moment.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None and 110 < seconds <= 120
    assert parse_retry_after("120") == 120
    assert parse_retry_after("soon") is None


def test_gone_stops_and_network_outage_does_not_back_off() -> None:
    """410 means gone; a transport error while the network is down retries soon without backoff."""
    gone = p.decide(B, None, p.Observation(ok=False, status=410, failures=1), network_down=False)
    assert gone.gone
    obs = p.Observation(ok=False, transport_error=True, failures=7)
    assert p.decide(B, None, obs, network_down=True).delay == 200  # min_interval floor
    assert p.decide(B, None, obs, network_down=False).delay == 21600


def test_adaptive_interval_speeds_up_while_active_and_slows_when_quiet() -> None:
    """Changes halve the interval down to min_interval; quiet polls grow it to max_interval."""
    current = 600.0
    for _ in range(5):
        current = p.decide(
            B, current, p.Observation(ok=True, changed=True), network_down=False
        ).interval
    assert current == B.min_interval == 200
    for _ in range(30):
        current = p.decide(B, current, p.Observation(ok=True), network_down=False).interval
    assert current == B.max_interval == 4800
    fixed = p.default_bounds(600.0, adaptive=False)
    assert (
        p.decide(fixed, 100, p.Observation(ok=True, changed=True), network_down=False).delay == 600
    )


def test_publisher_floors_are_never_undercut() -> None:
    """max-age/Expires, RSS ttl and Retry-After lengthen the wait even for an active source."""
    active = p.Observation(ok=True, changed=True, max_age=3600, ttl=1800)
    decision = p.decide(B, 600, active, network_down=False)
    assert decision.delay == 3600 and "Cache-Control" in decision.reason
    assert decision.interval == 300  # our own pace is remembered for when the floor lifts
    ttl = p.decide(B, 600, p.Observation(ok=True, ttl=5400), network_down=False)
    assert ttl.delay == 5400 and ttl.reason == "publisher asked (RSS ttl)"


def test_jitter_only_lengthens_and_skip_hours_are_avoided() -> None:
    """Jitter adds 0-10 %; a check landing in a skipped UTC hour moves to the next open hour."""
    rng = random.Random(1)
    delays = [p.jittered(600, rng) for _ in range(200)]
    assert min(delays) >= 600 and max(delays) <= 660 and len(set(delays)) > 100
    delay = p.skip_hours_delay(NOW, 600, frozenset({12, 13}))
    assert NOW + timedelta(seconds=delay) == NOW.replace(hour=14)
    assert p.skip_hours_delay(NOW, 600, frozenset(range(24))) == 600


def test_start_up_keeps_stored_plans_and_spreads_overdue_sources() -> None:
    """A future next_check_at is kept; overdue sources spread out but respect min_interval."""
    rng = random.Random(2)
    planned = p.initial_delay(
        now=NOW,
        bounds=B,
        next_check_at=NOW + timedelta(seconds=90),
        last_fetch_at=None,
        spread=300,
        rng=rng,
    )
    assert planned == 90
    spread = [
        p.initial_delay(
            now=NOW,
            bounds=B,
            next_check_at=NOW - timedelta(hours=1),
            last_fetch_at=None,
            spread=300,
            rng=rng,
        )
        for _ in range(1000)
    ]
    assert 0 <= min(spread) < 10 and 290 < max(spread) <= 300
    recent = p.initial_delay(
        now=NOW,
        bounds=B,
        next_check_at=None,
        last_fetch_at=NOW - timedelta(seconds=50),
        spread=300,
        rng=rng,
    )
    assert recent >= B.min_interval - 50


def test_network_monitor_needs_several_hosts_and_clears_on_any_answer() -> None:
    """Transport errors from 3 hosts mean our network is down; one HTTP answer clears it."""
    net = p.NetworkMonitor(min_hosts=3, window=60, probe_interval=30)
    net.record(0, "a", ok=False, transport_error=True)
    net.record(1, "a", ok=False, transport_error=True)
    net.record(2, "b", ok=False, transport_error=True)
    assert not net.is_down(3)
    net.record(4, "c", ok=False, transport_error=True)
    assert net.is_down(5)
    assert net.take_probe(5) and not net.take_probe(20) and net.take_probe(36)
    assert not net.is_down(100)  # the failures aged out of the window
    for t, host in enumerate("abc"):
        net.record(200 + t, host, ok=False, transport_error=True)
    net.record(203, "d", ok=False, transport_error=False)  # an HTTP 500 is an answer
    assert not net.is_down(204)


def test_transport_errors_are_told_apart_from_http_and_parse_errors() -> None:
    """Only failures without any HTTP response count towards a network outage."""
    assert p.is_transport_error(None, "connection failed: [Errno 111] Connection refused")
    assert p.is_transport_error(None, "cannot resolve host 'x.example': ...")
    assert p.is_transport_error(None, "timed out: no complete response within 30s")
    assert not p.is_transport_error(503, "HTTP 503 service unavailable")
    assert not p.is_transport_error(None, "response too large: more than 5 bytes")


def test_startup_window_grows_with_the_number_of_sources() -> None:
    """A few sources start within a second; thousands are spread over the whole window."""
    from aggregator.schedule_policy import startup_window

    assert startup_window(300, 2) == 1.0
    assert startup_window(300, 100) == 50.0
    assert startup_window(300, 10_000) == 300
