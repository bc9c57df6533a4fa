"""Validation of a plugin's own config keys (source kinds and sink kinds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from aggregator.errors import ConfigError


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
