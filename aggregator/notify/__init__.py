"""Sinks: where events go. One module per kind, registered in ``SINKS`` (one line each).

A sink class declares its kind-specific config keys as a pydantic ``Options``
model (unknown keys are rejected at start-up) and implements ``send``; see
``aggregator.notify.base``. Delivery (queueing, retries, order) is the
worker's job (``aggregator.notify.worker``), not the sink's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from aggregator.errors import ConfigError
from aggregator.notify.apprise import AppriseSink
from aggregator.notify.base import DeliveryError, Sink
from aggregator.notify.email import EmailSink
from aggregator.notify.jsonl import JsonlSink
from aggregator.notify.stdout import StdoutSink
from aggregator.notify.webhook import WebhookSink
from aggregator.options import register_validator, validate_plugin_options

__all__ = ["SINKS", "DeliveryError", "Sink", "make_sink", "validate_options"]

SINKS: dict[str, type[Sink]] = {
    sink.kind: sink
    for sink in (
        StdoutSink,
        JsonlSink,
        WebhookSink,
        EmailSink,
        AppriseSink,
    )
}  # fmt: skip


def sink_class(kind: str) -> type[Sink]:
    """The sink class for ``kind``; ``ConfigError`` if there is none."""
    try:
        return SINKS[kind]
    except KeyError:
        known = ", ".join(sorted(SINKS))
        raise ConfigError(f"kind: unknown sink kind {kind!r} (known: {known})") from None


def validate_options(kind: str, options: Mapping[str, Any]) -> BaseModel:
    """Check the kind-specific keys of a sink; ``ConfigError`` names the bad key."""
    return validate_plugin_options(sink_class(kind).Options, options, f"sink kind {kind!r}")


register_validator("sink", validate_options)  # so the config checks sinks' keys at load


def make_sink(kind: str, name: str, options: Mapping[str, Any]) -> Sink:
    """A ready sink of ``kind`` called ``name`` with validated ``options``."""
    return sink_class(kind)(name, validate_options(kind, options))
