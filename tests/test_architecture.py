"""The package's imports point one way, and only the store talks SQL."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aggregator"

#: Modules (by top-level name under aggregator) each layer must never import.
FORBIDDEN = {
    "models": {"fetch", "parse", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "normalize": {"fetch", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "detect": {"fetch", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "diff": {"fetch", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "parse": {"fetch", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "fetch": {"parse", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "store": {"fetch", "notify", "digest", "pipeline", "scheduler", "cli"},
    "notify": {"parse", "pipeline", "scheduler", "cli"},  # may reuse fetch's HTTP helpers
    "digest": {"fetch", "parse", "pipeline", "scheduler", "cli", "notify"},
    "pipeline": {"scheduler", "cli"},
    "scheduler": {"cli"},
}
SQL_MODULES = {"sqlite3", "sqlite_utils"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def test_imports_point_one_way() -> None:
    """No stage imports a stage downstream of it."""
    problems = []
    for path in PACKAGE.rglob("*.py"):
        banned = FORBIDDEN.get(layer(path), set())
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "aggregator" and len(parts) > 1 and parts[1] in banned:
                problems.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert problems == []


def test_only_the_store_talks_sql() -> None:
    """sqlite3 and sqlite_utils are imported only under aggregator/store."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if layer(path) != "store" and imports(path) & SQL_MODULES
    ]
    assert offenders == []
