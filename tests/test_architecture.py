"""The package's imports point one way, form no cycle, and only the store talks SQL."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aggregator"
ROOT = PACKAGE.name

#: Modules (by top-level name under aggregator) each layer must never import.
#: The flow is config -> scheduler -> fetch -> parse -> normalize -> detect -> store ->
#: notify/digest, with cli on top; a layer imports the ones it builds on, never the reverse.
FORBIDDEN = {
    "config": {
        "fetch", "parse", "store", "notify", "digest", "pipeline", "follow", "scheduler", "cli",
    },
    "options": {
        "config", "fetch", "parse", "store", "notify", "digest", "pipeline", "scheduler", "cli",
    },
    "models": {"fetch", "parse", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "normalize": {"fetch", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "detect": {"fetch", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "diff": {"fetch", "store", "notify", "digest", "pipeline", "scheduler", "cli"},
    "parse": {"fetch", "store", "notify", "digest", "pipeline", "websub", "scheduler", "cli"},
    "fetch": {"parse", "store", "notify", "digest", "pipeline", "websub", "scheduler", "cli"},
    # the worker boundary: bytes in, items out; nothing that does I/O or SQL
    "sandbox": {"fetch", "store", "notify", "digest", "pipeline", "follow", "scheduler", "cli"},
    "store": {"fetch", "notify", "digest", "pipeline", "websub", "scheduler", "cli"},
    "notify": {"parse", "pipeline", "scheduler", "cli"},  # may reuse fetch's HTTP helpers
    "digest": {"fetch", "parse", "pipeline", "scheduler", "cli", "notify"},
    "pipeline": {"scheduler", "cli"},
    # push sits beside the pipeline, under the scheduler: only its pure discover is used below
    "websub": {"scheduler", "cli"},
    "scheduler": {"cli"},
    # the browser driver: a tool for fetch and digest, knowing nothing of either
    "chromium": {
        "config", "fetch", "parse", "store", "notify", "digest", "pipeline", "follow",
        "scheduler", "cli", "web",
    },
}  # fmt: skip
SQL_MODULES = {"sqlite3", "sqlite_utils"}


@dataclass(frozen=True)
class Import:
    """One import statement: ``module`` (absolute) and the ``names`` taken from it."""

    line: int
    module: str
    names: tuple[str, ...]
    where: str  # "" (module level), "in a function" or "under TYPE_CHECKING"


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both dotted module names) at ``path``:``line``."""

    source: str
    target: str
    path: Path
    line: int
    where: str = ""

    def __str__(self) -> str:
        place = f" ({self.where})" if self.where else ""
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line} imports {self.target}{place}"


def module_name(path: Path) -> str:
    """``aggregator/notify/webhook.py`` -> ``aggregator.notify.webhook``; a package's
    ``__init__.py`` is the package itself."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module name ``path`` imports as written (absolute form; any package)."""
    return {statement.module for statement in import_statements(path)}


def import_statements(path: Path) -> list[Import]:
    """Every import anywhere in ``path``: module level, in functions and under
    ``if TYPE_CHECKING:`` alike, relative ones made absolute. ``import a.b`` gives
    module ``a.b`` and no names; ``from a import b, c`` gives module ``a``, names ``b, c``.
    """
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(_imports_in(tree.body, package, ""), key=lambda i: i.line)


def _imports_in(nodes: Iterable[ast.AST], package: str, where: str) -> Iterator[Import]:
    """The imports in ``nodes``, each labelled with the innermost special place it is in."""
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (Import(node.lineno, a.name, (), where) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            names = tuple(alias.name for alias in node.names)
            yield Import(node.lineno, module, names, where)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports_in(ast.iter_child_nodes(node), package, "in a function")
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _imports_in(node.body, package, "under TYPE_CHECKING")
            yield from _imports_in(node.orelse, package, where)
        else:
            yield from _imports_in(ast.iter_child_nodes(node), package, where)


def known_module(name: str) -> str | None:
    """The package module ``name`` denotes: itself, else its nearest existing parent."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def targets(importer: str, module: str, names: tuple[str, ...]) -> set[str]:
    """The package modules one import statement in ``importer`` loads.

    ``from a.b import c`` loads ``a.b.c`` if that is a module, else ``a.b``. Importing
    ``a.b.c`` also runs the ``__init__`` of each enclosing package the importer is not
    itself inside (its own are already loading), so that counts as importing them too.
    """
    if module.split(".")[0] != ROOT:
        return set()
    named = [f"{module}.{name}" for name in names]
    loaded = {m if m in modules() else known_module(module) for m in named or [module]}
    found = {m for m in loaded if m}
    for target in list(found):
        parts = target.split(".")
        for depth in range(2, len(parts)):
            parent = ".".join(parts[:depth])
            if not (importer == parent or importer.startswith(parent + ".")):
                found.add(parent)
    found.discard(importer)
    return found


@cache
def import_graph() -> dict[str, dict[str, Edge]]:
    """For each module, the package modules it imports (each with the first import's place)."""
    graph: dict[str, dict[str, Edge]] = {}
    for name, path in modules().items():
        edges = graph.setdefault(name, {})
        for statement in import_statements(path):
            for target in sorted(targets(name, statement.module, statement.names)):
                edge = Edge(name, target, path, statement.line, statement.where)
                edges.setdefault(target, edge)
    return graph


def strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def cycles(graph: dict[str, dict[str, Edge]], limit: int = 200) -> list[list[str]]:
    """Every elementary import cycle (up to ``limit``), each as ``[a, b, ..., a]``.

    Each cycle is listed once, starting from its alphabetically first module.
    """
    found: list[list[str]] = []
    for component in strongly_connected(graph):
        members = set(component)
        for start in component:
            allowed = {m for m in members if m > start}
            stack: list[tuple[str, list[str]]] = [(start, [start])]
            while stack and len(found) < limit:
                node, path = stack.pop()
                for target in sorted(graph[node], reverse=True):
                    if target == start:
                        found.append([*path, start])
                    elif target in allowed and target not in path:
                        stack.append((target, [*path, target]))
    return sorted(found, key=lambda cycle: (len(cycle), cycle))


def describe(cycle: list[str], graph: dict[str, dict[str, Edge]]) -> str:
    """``a -> b -> a`` and, below it, the import line behind each arrow."""
    lines = [" -> ".join(cycle)]
    lines += [f"    {graph[a][b]}" for a, b in itertools.pairwise(cycle)]
    return "\n".join(lines)


def layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def test_imports_point_one_way() -> None:
    """No stage imports a stage downstream of it (relative and function-local imports too)."""
    graph = import_graph()
    problems = []
    for name, path in modules().items():
        banned = FORBIDDEN.get(layer(path), set())
        for target, edge in graph[name].items():
            parts = target.split(".")
            if len(parts) > 1 and parts[1] in banned:
                problems.append(str(edge))
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems)
        pytest.fail(f"imports against the layer order (see FORBIDDEN):\n{listed}", pytrace=False)


def test_no_import_cycles() -> None:
    """The package's modules import each other without a cycle.

    Every import counts: module level, inside functions and under ``if TYPE_CHECKING:``.
    """
    graph = import_graph()
    found = cycles(graph)
    if found:
        report = "\n\n".join(describe(cycle, graph) for cycle in found)
        pytest.fail(f"{len(found)} import cycle(s) in {ROOT}:\n\n{report}", pytrace=False)


def test_the_import_graph_sees_every_kind_of_import() -> None:
    """The graph resolves relative, function-local, TYPE_CHECKING and submodule imports.

    Checked against imports the package really has, so a graph that misses a kind of
    import (and so could never find a cycle through it) fails here.
    """
    graph = import_graph()
    assert "aggregator.config.models" in graph["aggregator.config"]  # from pkg.sub import name
    assert "aggregator.notify.render" in graph["aggregator.notify.apprise"]  # from pkg import sub
    assert "aggregator.config" in graph["aggregator.fetch.http"]  # from pkg import name
    assert "aggregator.demo.server" in graph["aggregator.demo"]  # from .sub import name
    typed = graph["aggregator.housekeeping"]["aggregator.config"]
    assert typed.where == "under TYPE_CHECKING"
    local = graph["aggregator.store.outbox"]["aggregator.store.rows"]
    assert local.where == "in a function"
    # importing aggregator.store.queries from outside runs aggregator/store/__init__.py too
    assert {"aggregator.store", "aggregator.store.queries"} <= set(graph["aggregator.digest.model"])


def test_cycles_are_found_and_described() -> None:
    """A hand-made graph with two cycles through one module yields both, readably."""
    path = PACKAGE / "x.py"
    names = {"a": ["b"], "b": ["a", "c"], "c": ["b", "d"], "d": []}
    graph = {n: {t: Edge(n, t, path, i + 1) for i, t in enumerate(ts)} for n, ts in names.items()}
    assert cycles(graph) == [["a", "b", "a"], ["b", "c", "b"]]
    assert describe(["a", "b", "a"], graph) == (
        "a -> b -> a\n    aggregator/x.py:1 imports b\n    aggregator/x.py:1 imports a"
    )


#: Run in a fresh interpreter: what importing the config loads, and how it checks plugin keys.
REGISTRY_SCRIPT = """
import json, sys
from aggregator import config
from aggregator.errors import ConfigError

out = {"loaded": sorted(m for m in sys.modules if m.split(".")[:2] in (
    ["aggregator", "parse"], ["aggregator", "notify"], ["aggregator", "fetch"]))}
raw = {"sinks": [{"kind": "webhook", "url": "ftp://x.example/"}]}
config.parse({"sources": []}, "x.toml")  # no plugin table: nothing to check
try:
    config.parse(raw, "x.toml")
except RuntimeError as exc:
    out["unregistered"] = str(exc)
from aggregator.cli.common import register_plugins
register_plugins()
try:
    config.parse(raw, "x.toml")
except ConfigError as exc:
    out["registered"] = str(exc)
print(json.dumps(out))
"""


def test_config_imports_no_plugin_yet_checks_plugin_keys() -> None:
    """Importing ``aggregator.config`` loads no plugin registry, not even lazily; each
    registry registers its kinds' checker when imported (the CLI imports both before
    loading a config), and a bad
    plugin key is then refused at load, naming file and key; unregistered, loading says so.
    """
    run = subprocess.run(
        [sys.executable, "-c", REGISTRY_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    out = json.loads(run.stdout)
    assert out["loaded"] == []
    assert "no sink kinds are registered (import aggregator.notify" in out["unregistered"]
    assert out["registered"] == "x.toml: sinks[0].url: not an http(s) URL: 'ftp://x.example/'"


def test_only_the_store_talks_sql() -> None:
    """sqlite3 and sqlite_utils are imported only under aggregator/store."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if layer(path) != "store" and imports(path) & SQL_MODULES
    ]
    assert offenders == []
