"""Validation of a plugin's own config keys (source kinds and sink kinds).

The plugin registries live with their plugins (``aggregator.parse.PARSERS``,
``aggregator.notify.SINKS``), above the config in the import order. So the
config can still reject a bad plugin key at load, each registry registers its
checker here, below the config, when it is imported::

    register_validator("sink", validate_options)

and ``aggregator.config`` looks the checker up by family (``"source"``,
``"sink"``) without importing the registry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from aggregator.errors import ConfigError
from aggregator.timeutil import FROM_FILE

#: Checks the kind-specific keys of one plugin: ``(kind, options) -> validated Options``.
#: Raises ``ConfigError("<key>: <problem>")``.
Validator = Callable[[str, Mapping[str, Any]], BaseModel]

#: Which package registers each family's checker (named in the error if it has not).
FAMILIES = {"source": "aggregator.parse", "sink": "aggregator.notify"}

_validators: dict[str, Validator] = {}


#: Where an unknown-key error sends the user: a file every installation can write.
KEYS_HINT = (
    "check the spelling; `aggregator init --config example.toml` writes every key, commented"
)


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known key closest to ``key``, else ``""``."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class UnknownKeyError(ConfigError):
    """A plugin does not know ``key``; ``known`` are the keys it does, ``label`` names it."""

    def __init__(self, key: str, label: str, known: Iterable[str]) -> None:
        self.key, self.label, self.known = key, label, tuple(known)
        super().__init__(
            f"{key}: unknown key for {label}{did_you_mean(key, self.known)} ({KEYS_HINT})"
        )


def register_validator(family: str, validate: Validator) -> None:
    """Make ``validate`` the checker of ``family`` (one of ``FAMILIES``)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown plugin family {family!r} (known: {', '.join(FAMILIES)})")
    _validators[family] = validate


def validator(family: str) -> Validator:
    """The registered checker of ``family``.

    Raises:
        RuntimeError: its registry was never imported, so plugin keys cannot be
            checked (a program error: import it before loading a config).
    """
    try:
        return _validators[family]
    except KeyError:
        raise RuntimeError(
            f"cannot check {family} options: no {family} kinds are registered"
            f" (import {FAMILIES[family]} before loading a config)"
        ) from None


def validate_plugin_options(
    model: type[BaseModel], options: Mapping[str, Any], label: str
) -> BaseModel:
    """Validate ``options`` against a plugin's ``Options`` model.

    Args:
        model: the plugin's pydantic ``Options`` (``extra="forbid"``).
        options: the kind-specific keys as written.
        label: how the plugin is named in messages, e.g. ``kind 'liveblog'``.

    Raises:
        UnknownKeyError: the first bad key is not one of the model's.
        ConfigError: ``"<key>: <problem>"`` for the first bad key.
    """
    try:
        return model.model_validate(dict(options), context={FROM_FILE: True})
    except ValidationError as exc:
        # an unknown key first: a misspelt required key is also reported missing
        error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        key = ".".join(str(p) for p in error["loc"]) or "options"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            known = model.model_fields if len(error["loc"]) == 1 else ()
            raise UnknownKeyError(key, label, known) from None
        if error["type"] == "missing":
            message = f"required key for {label} is missing"
        raise ConfigError(f"{key}: {message}") from None
