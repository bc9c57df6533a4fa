"""SIGKILL the daemon 50+ times against an evolving local server; check nothing was lost.

    python benchmarks/crash_soak.py [--kills 50] [--seed 1]

See tests/crashrig.py for the scenario and the checks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import crashrig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report = crashrig.run(Path(tmp), kills=args.kills, seed=args.seed)
    print(f"all checks passed in {time.monotonic() - started:.0f}s: {report}")


if __name__ == "__main__":
    main()
