"""Add sources to the config on disk without rewriting what the user wrote.

New ``[[sources]]`` tables are appended as text (comments and layout stay),
and every edit is validated by loading the result before it replaces the file.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from aggregator import config as config_mod
from aggregator.config import Config
from aggregator.errors import ConfigError

MANAGED_INCLUDE = "sources.d/*.toml"


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
    text = old + ("\n" if old and not old.endswith("\n\n") else "")
    return text + "\n".join(source_table(s) for s in sources)


def ensure_include(config_path: Path, pattern: str = MANAGED_INCLUDE) -> str | None:
    """The text of the config with ``include = [pattern]`` added, or None if already there."""
    text = config_path.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    patterns = raw.get("include", [])
    if pattern in patterns:
        return None
    if "include" in raw:
        raise ConfigError(f"{config_path}: include: add {pattern!r} to it (or pass --into FILE)")
    return f"include = [{json.dumps(pattern)}]  # managed by aggregator import-opml\n" + text


def write_checked(files: dict[Path, str], config_path: Path) -> Config:
    """Write ``files`` together; put the originals back if the config no longer loads."""
    backups = {p: (p.read_text(encoding="utf-8") if p.exists() else None) for p in files}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    try:
        return config_mod.load(config_path)
    except ConfigError:
        for path, text in backups.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text, encoding="utf-8")
        raise
