"""How long the CLI takes to start: `aggregator --help` and tab completion against a bare Python.

Each command runs as a fresh process, ``--runs`` times, interleaved so that a busy moment
of the machine falls on all of them alike; the script prints the median and the fastest
run of each, and each median's distance from a bare ``python3 -c pass``. The target (issue
20): ``--help`` and completion within 150 ms of the bare interpreter.

    python3 benchmarks/startup.py              # 21 runs each
    python3 benchmarks/startup.py --runs 51
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 150.0
#: The commands the target is about; the others are shown for comparison.
TARGETED = ("python3 -m aggregator --help", "aggregator --help", "completion")


def commands(script: str | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Name -> (argv, extra environment) of everything timed."""
    py = sys.executable
    complete = {"COMP_WORDS": "aggregator ou", "COMP_CWORD": "1"}
    found: dict[str, tuple[list[str], dict[str, str]]] = {
        "python3 -c pass": ([py, "-c", "pass"], {}),
        "python3 -m aggregator --help": ([py, "-m", "aggregator", "--help"], {}),
        "python3 -m aggregator outbox list --help": (
            [py, "-m", "aggregator", "outbox", "list", "--help"],
            {},
        ),
        "python3 -m aggregator -V": ([py, "-m", "aggregator", "-V"], {}),
    }
    if script:
        found["aggregator --help"] = ([script, "--help"], {})
        found["completion: aggregator ou<TAB>"] = (
            [script],
            {"_AGGREGATOR_COMPLETE": "bash_complete", **complete},
        )
        found["completion script (bash_source)"] = (
            [script],
            {"_AGGREGATOR_COMPLETE": "bash_source"},
        )
    return found


def once(argv: list[str], env: dict[str, str], cwd: str) -> float | None:
    """Wall time of one run in milliseconds; ``None`` if it failed (an older release's
    ``outbox list --help`` needed a config)."""
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    took = (time.perf_counter() - started) * 1000
    return took if proc.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command")
    args = parser.parse_args()
    script = shutil.which("aggregator", path=str(Path(sys.executable).parent))
    todo = commands(script)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR")}
    times: dict[str, list[float]] = {name: [] for name in todo}
    with tempfile.TemporaryDirectory() as cwd:  # no config here: --help must not need one
        for name, (argv, extra) in list(todo.items()):  # warm the file cache once
            if once(argv, {**base_env, **extra}, cwd) is None:
                print(f"{name}: fails here (exit status not 0); not timed")
                del todo[name], times[name]
        for _ in range(args.runs):
            for name, (argv, extra) in todo.items():
                took = once(argv, {**base_env, **extra}, cwd)
                if took is None:
                    raise SystemExit(f"{name} failed on a later run")
                times[name].append(took)
    bare = statistics.median(times["python3 -c pass"])
    print(f"{args.runs} runs each, {sys.executable}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':42} {'median ms':>10} {'min ms':>8} {'over bare':>10}")
    worst = 0.0
    for name, runs in times.items():
        median = statistics.median(runs)
        over = median - bare
        if name != "python3 -c pass":
            worst = max(worst, over)
        print(f"{name:42} {median:10.1f} {min(runs):8.1f} {over:+10.1f}")
    verdict = "met" if worst <= TARGET_MS else "missed"
    print(
        f"target: within {TARGET_MS:.0f} ms of python3 -c pass: {verdict} (worst {worst:+.1f} ms)"
    )
    if not script:
        print("(no `aggregator` console script next to this python: completion not timed)")


if __name__ == "__main__":
    main()
