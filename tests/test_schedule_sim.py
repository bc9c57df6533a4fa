"""benchmarks/schedule_sim.py on a small trace set: the learned schedule beats fixed polling."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2025, 3, 3, tzinfo=UTC).timestamp()
DAY = 86400.0


def write_traces(folder: Path, seed: int = 3) -> int:
    """Eight sources over four days, 1 to 100 posts a day with a daily rhythm; some edits."""
    rng = random.Random(seed)
    events = 0
    for i, per_day in enumerate((1, 3, 6, 12, 25, 40, 70, 100)):
        peak, rate = rng.uniform(6, 20), per_day / DAY
        t, lines = START, []
        while t < START + 4 * DAY:
            t += rng.expovariate(2 * rate)
            hour = (t - START) % DAY / 3600
            if rng.random() < (1 + 0.9 * math.cos(2 * math.pi * (hour - peak) / 24)) / 2:
                lines.append({"at": t, "kind": "new", "key": f"s{i}-{len(lines)}"})
                if rng.random() < 0.2:
                    lines.append({"at": t + rng.uniform(60, 3600), "kind": "edit",
                                  "key": lines[-1]["key"]})  # fmt: skip
        lines.sort(key=lambda e: e["at"])
        text = "".join(
            json.dumps({**e, "at": datetime.fromtimestamp(e["at"], UTC).isoformat()[:19] + "Z"})
            + "\n"
            for e in lines
        )
        (folder / f"source{i}.jsonl").write_text(text)
        events += len(lines)
    return events


def test_learned_finds_posts_sooner_than_fixed_at_no_more_requests(tmp_path: Path) -> None:
    """The simulator prints one JSON object; learned's mean delay is under fixed's, at most
    fixed's requests; every policy reports the figures the issue names."""
    write_traces(tmp_path)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "schedule_sim.py"), str(tmp_path),
         "--interval", "10m"],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert set(result) == {"learned", "adaptive", "fixed"}
    for figures in result.values():
        assert {"requests", "requests_per_day", "mean_delay_s", "median_delay_s", "p95_delay_s",
                "missed"} <= set(figures)  # fmt: skip
    learned, fixed = result["learned"], result["fixed"]
    assert fixed["mean_delay_s"] == pytest.approx(315, rel=0.08)  # half of 10 min, plus jitter
    assert learned["requests"] <= fixed["requests"]
    assert learned["mean_delay_s"] < 0.85 * fixed["mean_delay_s"]


def test_bad_trace_lines_are_refused_with_file_and_line(tmp_path: Path) -> None:
    """A line with an unknown kind names the file and line; an empty folder says so."""
    line = '{"at": "2025-03-03T00:00:00Z", "kind": "posted", "key": "x"}\n'
    (tmp_path / "a.jsonl").write_text(line)
    script = str(ROOT / "benchmarks" / "schedule_sim.py")
    bad = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0
    assert f"{tmp_path / 'a.jsonl'}:1: kind must be new or edit, got 'posted'" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = subprocess.run([sys.executable, script, str(empty)], capture_output=True, text=True)
    assert "no <source>.jsonl files" in none.stderr
