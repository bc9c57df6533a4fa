"""Read and validate the TOML configuration, once, into frozen models.

Everything is checked up front: an unknown key, a bad URL, a bad interval or a
duplicate name raises ``ConfigError`` naming the file, the key path and the
problem. Kind-specific source and sink options are checked by the checkers
their registries (``aggregator.parse``, ``aggregator.notify``) put in
``aggregator.options`` when imported: the config never imports a plugin.

Lookup order when no ``--config`` is given: ``$AGGREGATOR_CONFIG``,
``./aggregator.toml``, then ``$XDG_CONFIG_HOME/aggregator/config.toml``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from aggregator.chromium.process import find_executable, missing_message
from aggregator.config.models import (
    BROWSER_KINDS,
    DEFAULT_USER_AGENT,
    EVENT_KINDS,
    BrowserConfig,
    Config,
    DigestConfig,
    Duration,
    FetchConfig,
    ImagesConfig,
    LimitsConfig,
    NotifyConfig,
    ParseConfig,
    ScheduleConfig,
    SinkConfig,
    SourceConfig,
    StorageConfig,
    WebSubConfig,
    default_database,
    name_from_url,
)
from aggregator.errors import ConfigError
from aggregator.options import KEYS_HINT, UnknownKeyError, did_you_mean, validator
from aggregator.timeutil import FROM_FILE

__all__ = [
    "BROWSER_KINDS",
    "DEFAULT_USER_AGENT",
    "EVENT_KINDS",
    "BrowserConfig",
    "Config",
    "DigestConfig",
    "Duration",
    "FetchConfig",
    "ImagesConfig",
    "LimitsConfig",
    "NoConfigFound",
    "NotifyConfig",
    "ParseConfig",
    "ScheduleConfig",
    "SinkConfig",
    "SourceConfig",
    "StorageConfig",
    "WebSubConfig",
    "default_database",
    "find_config",
    "included_files",
    "load",
    "name_from_url",
    "parse",
    "warnings",
]


class NoConfigFound(ConfigError):
    """No config file was named and none was found in the default places."""


def find_config(explicit: str | None = None) -> Path:
    """Locate the config file, or raise ``ConfigError`` saying how to create one.

    An explicit path or a set ``$AGGREGATOR_CONFIG`` is the config: when it does
    not exist that is an error, never a silent fall back to the default places.
    Only when neither is given and nothing is found is it ``NoConfigFound``.
    """
    if explicit:
        return Path(explicit)
    if env := os.environ.get("AGGREGATOR_CONFIG"):
        if not Path(env).is_file():
            raise ConfigError(
                f"{env}: file not found (named by $AGGREGATOR_CONFIG; fix or unset the"
                " variable, or pass --config FILE)"
            )
        return Path(env)
    candidates = [Path("aggregator.toml")]
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidates.append(Path(xdg) / "aggregator" / "config.toml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise NoConfigFound(
        f"no configuration file found (looked for {tried}).\n"
        "Start one with `aggregator init` (a commented ./aggregator.toml) or"
        " `aggregator add URL`; or pass --config FILE; or try `aggregator demo` first."
    )


def load(path: str | Path) -> Config:
    """Read, merge defaults into and validate the config at ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    included = _included_sources(path, raw)
    if included:
        raw = {**raw, "sources": [*raw.get("sources", []), *included]}
    return parse(_jsonl_beside(path, _database_beside(path, raw)), str(path))


def _database_beside(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """A relative ``[storage] database`` is relative to the config file, like ``include``.

    So cron, systemd and a shell in another directory all use the same database.
    """
    storage = raw.get("storage")
    if not isinstance(storage, dict) or not isinstance(storage.get("database"), str):
        return raw
    if "://" in storage["database"]:  # a URL (checked by StorageConfig), not a file
        return raw
    database = Path(storage["database"]).expanduser()
    if not database.is_absolute():
        database = path.parent / database
    return {**raw, "storage": {**storage, "database": str(database)}}


def _jsonl_beside(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """A relative ``path`` of a ``jsonl`` sink is relative to the config file too."""
    sinks = raw.get("sinks")
    if not isinstance(sinks, list):
        return raw
    resolved = []
    for sink in sinks:
        if (
            isinstance(sink, dict)
            and sink.get("kind") == "jsonl"
            and isinstance(sink.get("path"), str)
        ):
            target = Path(sink["path"]).expanduser()
            sink = {**sink, "path": str(target if target.is_absolute() else path.parent / target)}
        resolved.append(sink)
    return {**raw, "sinks": resolved}


def included_files(path: Path, patterns: Any) -> list[Path]:
    """The files matched by ``include`` patterns (relative to the config's directory)."""
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(
            f'{path}: include: must be a list of glob patterns, e.g. ["sources.d/*.toml"]'
        )
    files: list[Path] = []
    for pattern in patterns:
        if Path(pattern).is_absolute():
            matches = sorted(Path(pattern).parent.glob(Path(pattern).name))
        else:
            matches = sorted(path.parent.glob(pattern))
        files += [m for m in matches if m.is_file() and m not in files]
    return files


def _included_sources(path: Path, raw: dict[str, Any]) -> list[Any]:
    """Read the ``[[sources]]`` of every included file, each validated on its own."""
    sources: list[Any] = []
    for file in included_files(path, raw.get("include", [])):
        try:
            doc = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        extra = sorted(set(doc) - {"sources"})
        if extra:
            raise ConfigError(
                f"{file}: {extra[0]}: an included file may only hold [[sources]] tables"
            )
        doc_sources = {"defaults": raw.get("defaults", {}), "sources": doc.get("sources", [])}
        parse(doc_sources, str(file), defaults_where=str(path))
        sources += doc.get("sources", [])
    return sources


@dataclass(frozen=True)
class _Defaults:
    """Where ``[defaults]`` is written, so a bad key it gave a source is reported there."""

    keys: frozenset[str]
    sources: list[Any]  # the [[sources]] tables as written, before the defaults were merged
    where: str

    def gave(self, index: Any, key: Any) -> bool:
        """Whether source ``index`` has ``key`` from ``[defaults]`` (not its own table)."""
        if key not in self.keys or not isinstance(index, int) or index >= len(self.sources):
            return False
        own = self.sources[index]
        return isinstance(own, dict) and key not in own


def parse(raw: dict[str, Any], where: str = "<config>", *, defaults_where: str = "") -> Config:
    """Validate an already-parsed TOML document (``where`` names it in errors).

    ``defaults_where`` names the file holding ``[defaults]`` when it is not
    ``where`` (an included file's sources take the main file's defaults).
    """
    raw = dict(raw)
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where}: defaults: must be a table")
    _check_defaults(defaults, defaults_where or where)
    sources = raw.get("sources", [])
    if not isinstance(sources, list):
        raise ConfigError(f"{where}: sources: must be an array of tables ([[sources]])")
    given = _Defaults(frozenset(defaults), sources, defaults_where or where)
    raw["sources"] = [{**defaults, **s} if isinstance(s, dict) else s for s in sources]
    try:
        config = Config.model_validate({**raw, "path": where}, context={FROM_FILE: True})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where, raw, given)) from None
    problems = _check_named(config.sources, "source", where, given)
    problems += _check_named(config.sinks, "sink", where)
    _check_browser(config, where)
    config, digest_problems = _check_digests(config, where)
    problems += digest_problems
    if problems:  # every problem at once, not only the first
        raise ConfigError("\n".join(dict.fromkeys(problems)))
    return config


def browser_needed(config: Config) -> str | None:
    """The first key that needs Chromium (``sources[i].fetch``, ``sinks[i].image``), or None."""
    for i, source in enumerate(config.sources):
        if source.fetch == "browser" and source.enabled:
            return f"sources[{i}].fetch"
    for i, sink in enumerate(config.sinks):  # a webhook only links to serve's picture
        if sink.options.get("image") and sink.enabled and sink.kind != "webhook":
            return f"sinks[{i}].image"
    return None


def _check_browser(config: Config, where: str) -> None:
    """A source or sink that needs Chromium, with no Chromium installed, is a config error."""
    key = browser_needed(config)
    if key and find_executable(config.browser.executable) is None:
        missing = missing_message(config.browser.executable)
        raise ConfigError(f"{where}: {key}: needs Chromium: {missing}")


def _check_defaults(defaults: dict[str, Any], where: str) -> None:
    for key in ("url", "name"):
        if key in defaults:
            raise ConfigError(f"{where}: defaults.{key}: cannot be a default; set it per source")


def _check_named(
    items: list[SourceConfig] | list[SinkConfig],
    noun: str,
    where: str,
    given: _Defaults | None = None,
) -> list[str]:
    """Unique names, and kind-specific keys valid, for ``[[sources]]`` or ``[[sinks]]``.

    The keys are checked by the plugin family's registered checker (``noun``); a
    bad key a source took from ``[defaults]`` is reported as ``defaults.<key>``.
    Returns every problem found, one line each.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        label = f"{where}: {noun}s[{i}]"
        if item.name in seen:
            problems.append(
                f"{label}.name: duplicate name {item.name!r} (also {noun}s[{seen[item.name]}])"
                f"; give each {noun} a unique name"
            )
        seen.setdefault(item.name, i)
        try:
            validator(noun)(item.kind, item.options)
        except UnknownKeyError as exc:
            top = exc.key.split(".")[0]
            if given is not None and given.gave(i, top):
                label = f"{given.where}: defaults"
            hint = did_you_mean(top, {*exc.known, *type(item).model_fields})
            problems.append(f"{label}.{exc.key}: unknown key for {exc.label}{hint} ({KEYS_HINT})")
        except ConfigError as exc:
            top = str(exc).split(":")[0].split(".")[0]
            if given is not None and given.gave(i, top):
                label = f"{given.where}: defaults"
            problems.append(f"{label}.{exc}")
    return problems


def _check_digests(config: Config, where: str) -> tuple[Config, list[str]]:
    """Name each digest (default ``digest-N``), and check its names, sources and sink."""
    sources = {s.name for s in config.sources}
    sinks = getattr(config, "sinks", None)
    sink_names = {getattr(s, "name", None) for s in sinks} if sinks is not None else None
    digests, seen, problems = [], set(), []
    for i, digest in enumerate(config.digests):
        label = f"{where}: digests[{i}]"
        name = digest.name or f"digest-{i + 1}"
        if name in seen:
            problems.append(f"{label}.name: duplicate digest name {name!r}")
        seen.add(name)
        if unknown := sorted(set(digest.sources) - sources):
            problems.append(f"{label}.sources: no source named {', '.join(unknown)}")
        if sink_names is not None and digest.sink not in sink_names:
            problems.append(f"{label}.sink: no [[sinks]] entry named {digest.sink!r}")
        digests.append(digest.model_copy(update={"name": name}))
    return config.model_copy(update={"digests": digests}), problems


#: A polling interval shorter than this is accepted, with a warning.
SHORT_INTERVAL = 60.0
#: More sources than this under ``SHORT_INTERVAL``: one warning names the first few.
SHORT_INTERVAL_LINES = 3


def warnings(config: Config) -> list[str]:
    """What the config allows but a user probably did not mean, one line each.

    A source polled more often than once a minute is fine against a server of your
    own; against a publisher it can get you blocked.
    """
    short = [s for s in config.sources if s.enabled and s.interval < SHORT_INTERVAL]
    advice = (
        'fine for a server of your own, but a publisher may block you: write e.g. interval = "5m"'
    )
    if len(short) > SHORT_INTERVAL_LINES:  # one line, not one per source of a large config
        fastest = min(short, key=lambda s: s.interval)
        named = ", ".join(repr(s.name) for s in short[:SHORT_INTERVAL_LINES])
        return [
            f"{config.path}: {len(short)} sources ({named}, …) have an interval under a minute"
            f" (the shortest {fastest.interval:g}s, source {fastest.name!r}); {advice}"
        ]
    return [
        f"{config.path}: source {s.name!r}: interval {s.interval:g}s is under a minute"
        f" (about {SHORT_INTERVAL / s.interval:.0f} fetches a minute); {advice}"
        for s in short
    ]


def _describe(exc: ValidationError, where: str, raw: dict[str, Any], given: _Defaults) -> str:
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        path = f"{where}: {_key_path(loc, raw)}"
        if len(loc) >= 3 and loc[0] == "sources" and given.gave(loc[1], loc[2]):
            path = f"{given.where}: defaults.{_key_path(loc[2:], raw)}"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), _known_keys(loc))
            message = f"unknown key{hint} ({KEYS_HINT})"
        elif error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path}: {message}")
    return "\n".join(lines)


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the table holding the key at ``loc`` (for a did-you-mean)."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        model = _model_in(field.annotation) if field else None
    if model is None:
        return []
    return [key for key in model.model_fields if not (model is Config and key == "path")]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model in a field's type (``X``, ``list[X]``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _model_in(arg):
            return found
    return None


def _key_path(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    if len(loc) >= 2 and loc[0] in ("sources", "sinks") and isinstance(loc[1], int):
        try:
            name = raw[loc[0]][loc[1]].get("name")
        except (IndexError, AttributeError, KeyError):
            name = None
        if name:
            path += f" ({loc[0][:-1]} {name!r})"
    return path
