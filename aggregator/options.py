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

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from aggregator.errors import ConfigError

#: Checks the kind-specific keys of one plugin: ``(kind, options) -> validated Options``.
#: Raises ``ConfigError("<key>: <problem>")``.
Validator = Callable[[str, Mapping[str, Any]], BaseModel]

#: Which package registers each family's checker (named in the error if it has not).
FAMILIES = {"source": "aggregator.parse", "sink": "aggregator.notify"}

_validators: dict[str, Validator] = {}


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
        ConfigError: ``"<key>: <problem>"`` for the first bad key.
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"]) or "options"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key for {label} (check the spelling; see the README)"
        elif error["type"] == "missing":
            message = f"required key for {label} is missing"
        raise ConfigError(f"{key}: {message}") from None
