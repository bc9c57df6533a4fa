"""Edit the config on disk without rewriting what the user wrote.

New ``[[sources]]`` tables are appended as text, a removed one is cut out as
text and ``enabled`` is set on its own line, so comments and layout stay. A
source defined in an ``include``d file is edited in that file. Every edit is
validated by loading the result before it is kept.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aggregator import config as config_mod
from aggregator.config import Config
from aggregator.errors import ConfigError

MANAGED_INCLUDE = "sources.d/*.toml"

#: What ``aggregator init`` writes (and ``aggregator add`` when there is no config yet): the
#: commented example shipped inside the package, so every installation has it.
STARTER = resources.files("aggregator.config").joinpath("example.toml").read_text(encoding="utf-8")

_DATABASE = re.compile(r"^database = .*$", re.M)


def with_database(starter: str, database: str) -> str:
    """``starter`` with its ``[storage] database`` line naming ``database``."""
    return _DATABASE.sub(lambda _: f"database = {_toml(database)}", starter, count=1)


_HEADER = re.compile(r"""^\s*\[\[?\s*[\w."' -]+?\s*\]\]?\s*(#.*)?$""")
_SOURCES = re.compile(r"^\s*\[\[\s*sources\s*\]\]\s*(#.*)?$")
_SUBTABLE = re.compile(r"^\s*\[\[?\s*sources\s*\.")
_ENABLED = re.compile(r"^(\s*enabled\s*=\s*)(true|false)(\s*(#.*)?)$")
PAUSED_MARK = "  # paused by `aggregator pause`"


def source_table(source: dict[str, Any]) -> str:
    """One ``[[sources]]`` table in TOML."""
    lines = ["[[sources]]"]
    for key, value in source.items():
        if value in (None, [], ""):
            continue
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def appended(target: Path, sources: list[dict[str, Any]]) -> str:
    """The text of ``target`` (the config or an included file) with ``sources`` appended."""
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    return appended_to(old, sources)


def appended_to(old: str, sources: list[dict[str, Any]]) -> str:
    """``old`` config text with ``sources`` appended as ``[[sources]]`` tables."""
    text = old + ("\n" if old and not old.endswith("\n\n") else "")
    return text + "\n".join(source_table(s) for s in sources)


def source_problem(source: dict[str, Any]) -> str | None:
    """Why ``source`` (one table to be written) would not load, or None if it would."""
    try:
        config_mod.parse({"sources": [source]}, "")
    except ConfigError as exc:
        return "; ".join(line.split(": ", 2)[-1] for line in str(exc).splitlines())
    return None


def with_include(text: str, config_path: Path, pattern: str = MANAGED_INCLUDE) -> str | None:
    """The config ``text`` with ``include = [pattern]`` added, or None if already there."""
    raw = tomllib.loads(text)
    patterns = raw.get("include", [])
    if pattern in patterns:
        return None
    if "include" in raw:
        raise ConfigError(f"{config_path}: include: add {pattern!r} to it (or pass --into FILE)")
    return f"include = [{json.dumps(pattern)}]  # managed by aggregator import-opml\n" + text


def write_checked(files: dict[Path, str], config_path: Path) -> Config:
    """Write ``files`` together; put the originals back if the config no longer loads.

    The error then says nothing was saved, and marks the files it names that
    were never written.
    """
    backups = {p: (p.read_text(encoding="utf-8") if p.exists() else None) for p in files}
    made: list[Path] = []
    for path, text in files.items():
        made += _make_parents(path.parent)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    try:
        return config_mod.load(config_path)
    except ConfigError as exc:
        for path, text in backups.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text, encoding="utf-8")
        for directory in reversed(made):
            directory.rmdir()
        raise ConfigError(_not_saved(str(exc), backups)) from None


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; return those created, outermost first."""
    missing = [d for d in [directory, *directory.parents] if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _not_saved(message: str, backups: dict[Path, str | None]) -> str:
    for path, text in backups.items():
        if text is None:
            message = message.replace(f"{path}: ", f"{path} (not written): ")
    return f"{message}\nnothing was saved: every file is as it was"


@dataclass(frozen=True, slots=True)
class Place:
    """Where a configured source is written: the file and its position among its tables."""

    file: Path
    index: int


def locate(config: Config, name: str) -> Place:
    """The file (the config or an included file) and table defining source ``name``."""
    main = Path(config.path)
    raw = tomllib.loads(main.read_text(encoding="utf-8"))
    files = [main, *config_mod.included_files(main, raw.get("include", []))]
    places = [Place(file, index) for file in files for index in range(_count(file))]
    for source, place in zip(config.sources, places, strict=False):
        if source.name == name:
            return place
    names = ", ".join(s.name for s in config.sources) or "none"
    raise ConfigError(f"no source named {name!r} in {main} (configured: {names})")


def _count(file: Path) -> int:
    return len(tomllib.loads(file.read_text(encoding="utf-8")).get("sources", []))


def _span(lines: list[str], file: Path, index: int) -> tuple[int, int]:
    """First and past-last line of the ``index``-th ``[[sources]]`` table of ``lines``."""
    starts = [i for i, line in enumerate(lines) if _SOURCES.match(line)]
    expected = len(tomllib.loads("".join(lines)).get("sources", []))
    if len(starts) != expected:
        raise ConfigError(
            f"{file}: sources: cannot edit automatically (not written as [[sources]] tables,"
            " one per source); edit the file by hand"
        )
    start = starts[index]
    end = start + 1
    while end < len(lines) and not (_HEADER.match(lines[end]) and not _SUBTABLE.match(lines[end])):
        end += 1
    return start, end


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def removed(place: Place) -> str:
    """The text of ``place.file`` without that source's table.

    Comment lines after the table's last key are kept: they usually introduce
    the next table.
    """
    lines = place.file.read_text(encoding="utf-8").splitlines(keepends=True)
    start, end = _span(lines, place.file, place.index)
    last = max(i for i in range(start, end) if _is_content(lines[i]))
    rest = lines[last + 1 :]
    if start > 0 and not lines[start - 1].strip() and rest and not rest[0].strip():
        rest = rest[1:]  # no double blank line where the table was
    return "".join(lines[:start] + rest)


def with_enabled(place: Place, enabled: bool, *, default: bool = True) -> str:
    """The text of ``place.file`` with that source's ``enabled`` key set to ``enabled``.

    Pausing adds a marked ``enabled = false`` line after the table's keys;
    resuming removes that line again (unless ``default``, ``[defaults] enabled``,
    is false), or sets an ``enabled`` line the user wrote.
    """
    lines = place.file.read_text(encoding="utf-8").splitlines(keepends=True)
    start, end = _span(lines, place.file, place.index)
    body = start + 1
    while body < end and not _SUBTABLE.match(lines[body]):
        body += 1
    newline = "\r\n" if lines[start].endswith("\r\n") else "\n"
    for i in range(start + 1, body):
        match = _ENABLED.match(lines[i].rstrip("\r\n"))
        if match is None:
            continue
        if enabled and default and match.group(3).strip() == PAUSED_MARK.strip():
            return "".join(lines[:i] + lines[i + 1 :])
        value = "true" if enabled else "false"
        lines[i] = f"{match.group(1)}{value}{match.group(3)}{newline}"
        return "".join(lines)
    line = "enabled = false" + PAUSED_MARK if not enabled else "enabled = true"
    last = max(i for i in range(start, body) if _is_content(lines[i]))
    if not lines[last].endswith("\n"):
        lines[last] += newline
    lines.insert(last + 1, line + newline)
    return "".join(lines)
