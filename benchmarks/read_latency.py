"""Time every read command and SQL recipe of the manual on a (large) database.

    python3 benchmarks/bigdb.py /tmp/big1m.db                   # build the database first
    python3 benchmarks/read_latency.py /tmp/big1m.db [--repeat 7] [--only REGEX] [--no-subprocess]
    aggregator copy-to postgresql://... --db /tmp/big1m.db      # the same on PostgreSQL
    python3 benchmarks/read_latency.py postgresql://...

For each command the work is timed in-process: the same click command the CLI runs,
invoked through click's ``CliRunner`` (opening the database, querying, rendering),
``--repeat`` times after one untimed run (a command slower than a third of ``--budget``
seconds is timed by that one run). The median and 95th percentile of the wall time are
printed, and the median CPU time of the process: on a loaded machine the wall time also
counts waiting for a core. Each SQL recipe (every ```sql block of README.md and docs/; on
PostgreSQL, the ones spelt for it in docs/postgresql.md) is run on a read-only connection and
fetched in full. Then each command is run once as a real
subprocess (``python3 -m aggregator ...``) and its wall time printed separately: process
start (imports) costs about a second on top of the command's work.

The target is a median of at most 200 ms per command (``--target``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from aggregator.cli import main as cli
from aggregator.digest import FORMATS
from aggregator.store.db import connect, is_postgres

ROOT = Path(__file__).resolve().parent.parent
#: Words the generator (benchmarks/bigdb.py) put into the text: common, rare, a phrase.
COMMON_WORD = "government"
RARE_WORD = "quillobrant"
PHRASE = "harbour bridge closure"


@dataclass
class Case:
    name: str
    run: Callable[[], int]  # returns the size of the answer (bytes or rows)
    argv: list[str] | None = None  # for the subprocess run; None for SQL recipes


def readme_recipes(postgres: bool = False) -> list[str]:
    """Every ```sql block of the README and the manual (docs/), as the test suite runs them:
    the PostgreSQL page's for PostgreSQL, the others for SQLite."""
    page = ROOT / "docs" / "postgresql.md"
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files = [page] if postgres else [f for f in files if f != page]
    text = "\n".join(path.read_text(encoding="utf-8") for path in files)
    return re.findall(r"```sql\n(.*?)```", text, re.S)


def recipe_name(sql: str, index: int) -> str:
    """A short label: the recipe's comment, else its first table or view."""
    comment = re.search(r"^--\s*(.+)$", sql, re.M)
    if comment:
        return f"sql {index}: {comment.group(1)[:40]}"
    source = re.search(r"\bFROM\s+(\w+)", sql, re.I)
    return f"sql {index}: {source.group(1) if source else '?'}"


def pick_entries(db: str) -> dict[str, str]:
    """Entries to read: the one with most versions, a typical one, the README's story."""
    conn = connect(db, readonly=True)
    try:
        busiest = conn.execute(
            "SELECT id, url FROM entries ORDER BY version_count DESC LIMIT 1"
        ).fetchone()
        two = conn.execute(
            "SELECT id, key FROM entries WHERE version_count = 2 ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return {
        "busiest": str(busiest[0]),
        "busiest_url": busiest[1],
        "typical": str(two[0]),
        "typical_key": two[1],
    }


def cli_case(name: str, args: list[str]) -> Case:
    runner = CliRunner()

    def run() -> int:
        result = runner.invoke(cli, args, catch_exceptions=False)
        if result.exit_code not in (0, 1):
            raise RuntimeError(f"{name}: exit {result.exit_code}: {result.output[-500:]}")
        return len(result.output)

    return Case(name, run, args)


def sql_case(db: str, name: str, sql: str) -> Case:
    def run() -> int:
        conn = connect(db, readonly=True)
        try:
            return len(conn.execute(sql).fetchall())
        finally:
            conn.close()

    return Case(name, run)


def cases(db: str) -> list[Case]:
    picked = pick_entries(db)
    d = ["--db", str(db)]
    out = [cli_case(f"digest --since 24h -f {fmt}", ["digest", *d, "--since", "24h", "-f", fmt])
           for fmt in FORMATS]  # fmt: skip
    out += [
        cli_case("digest --since 1h", ["digest", *d, "--since", "1h"]),
        cli_case("digest --since 24h -s world", ["digest", *d, "--since", "24h", "-s", "world"]),
        cli_case("history talks (key)", ["history", *d, "talks"]),
        cli_case("history ID (busiest)", ["history", *d, picked["busiest"]]),
        cli_case("history URL (busiest)", ["history", *d, picked["busiest_url"]]),
        cli_case("history KEY (2 versions)", ["history", *d, picked["typical_key"]]),
        cli_case(f"history {RARE_WORD} (word)", ["history", *d, RARE_WORD]),
        cli_case("diff ID (busiest)", ["diff", *d, picked["busiest"]]),
        cli_case("diff talks --from 1 --to 5", ["diff", *d, "talks", "--from", "1", "--to", "5"]),
        cli_case(f"search {COMMON_WORD} (common)", ["search", *d, COMMON_WORD]),
        cli_case(f"search {RARE_WORD} (rare)", ["search", *d, RARE_WORD]),
        cli_case(f"search {PHRASE} (phrase)", ["search", *d, *PHRASE.split()]),
        cli_case("sources", ["sources", *d]),
        cli_case("status", ["status", *d]),
        cli_case("status --json", ["status", *d, "--json"]),
    ]
    for i, sql in enumerate(readme_recipes(is_postgres(db)), 1):
        out.append(sql_case(db, recipe_name(sql, i), sql))
    return out


def time_case(case: Case, repeat: int, budget: float) -> tuple[list[float], list[float], int]:
    """Wall and CPU milliseconds of ``repeat`` runs after an untimed one, and the answer's size.

    A command slower than a third of ``budget`` is timed by its first run alone, and
    repeats stop once ``budget`` is spent.
    """
    wall, cpu, size = _timed(case)
    if wall > budget * 1000 / 3:
        return [wall], [cpu], size
    walls: list[float] = []
    cpus: list[float] = []
    while len(walls) < repeat and (sum(walls) < budget * 1000 or len(walls) < 3):
        wall, cpu, size = _timed(case)
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus, size


def _timed(case: Case) -> tuple[float, float, int]:
    start, start_cpu = time.perf_counter(), time.process_time()
    size = case.run()
    return (time.perf_counter() - start) * 1000, (time.process_time() - start_cpu) * 1000, size


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def subprocess_ms(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aggregator", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return (time.perf_counter() - start) * 1000


def digest_split(db: str, repeat: int) -> None:
    """Where ``digest --since 24h`` spends its CPU: the queries, the diffs, each renderer."""
    from aggregator.digest import render
    from aggregator.digest.model import build_digest, group_stories
    from aggregator.store.queries import Reader
    from aggregator.timeutil import ago, now_db

    reader = Reader.open(db)
    since, until = ago(86400), now_db()
    rows = reader.changes(since, until)
    digest = build_digest(reader, since, until)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("queries: changes and their versions", lambda: reader.changes(since, until)),
        ("queries: sources polled, failing", lambda: reader.activity(since, until)),
        ("stories and word diffs", lambda: group_stories(rows)),
    ]
    steps += [(f"render {fmt}", lambda fmt=fmt: render(digest, fmt)) for fmt in FORMATS]
    print(f"\ndigest --since 24h ({len(rows):,} changes), median CPU ms per step")
    for label, step in steps:
        cpus = []
        for _ in range(repeat):
            start = time.process_time()
            step()
            cpus.append((time.process_time() - start) * 1000)
        print(f"  {label:<42} {statistics.median(cpus):>8.1f}", flush=True)
    reader.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db", help="an SQLite file or a postgresql:// URL")
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (default 7)")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds per command at most")
    parser.add_argument("--only", help="only the commands whose name matches this regex")
    parser.add_argument("--no-subprocess", action="store_true", help="skip the process runs")
    parser.add_argument("--target", type=float, default=200.0, help="median target, ms")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--digest-split", action="store_true", help="also time the digest's steps apart"
    )
    args = parser.parse_args(argv)
    if not is_postgres(args.db) and not Path(args.db).is_file():
        parser.error(f"no database at {args.db}: build it with benchmarks/bigdb.py")
    selected = [c for c in cases(args.db) if not args.only or re.search(args.only, c.name)]
    results = []
    head = f"{'command':<44} {'median ms':>10} {'p95 ms':>9} {'CPU ms':>8} {'runs':>5} {'size':>9}"
    print(head + "  target")
    for case in selected:
        walls, cpus, size = time_case(case, args.repeat, args.budget)
        median = statistics.median(walls)
        ok = "ok" if median <= args.target else "MISS"
        print(
            f"{case.name:<44} {median:>10.1f} {p95(walls):>9.1f} {statistics.median(cpus):>8.1f}"
            f" {len(walls):>5} {size:>9}  {ok}",
            flush=True,
        )
        results.append({"name": case.name, "median_ms": median, "p95_ms": p95(walls),
                        "cpu_ms": statistics.median(cpus), "runs": len(walls),
                        "size": size})  # fmt: skip
    if not args.no_subprocess:
        print(f"\n{'one subprocess run (python3 -m aggregator ...)':<44} {'wall ms':>10}")
        for case, result in zip(selected, results, strict=True):
            if case.argv is not None:
                wall = subprocess_ms(case.argv)
                result["subprocess_ms"] = wall
                print(f"{case.name:<44} {wall:>10.0f}", flush=True)
    if args.digest_split:
        digest_split(args.db, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
