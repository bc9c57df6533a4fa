"""What every sink is: an ``Options`` model and an async ``send`` that succeeds or says why not.

A sink sends one event (a dict in the public event format, see ``aggregator.events``)
and either returns (delivered) or raises ``DeliveryError``. ``permanent=True``
means the receiver refused this event for good (recorded as ``failed``, the
sink moves on); otherwise the worker retries with backoff, honouring
``retry_after`` when the receiver gave one.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from aggregator.errors import AggregatorError


class Options(BaseModel):
    """Base of every sink's options: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeliveryError(AggregatorError):
    """A send did not succeed.

    Attributes:
        permanent: the receiver refused this event for good; do not retry it.
        retry_after: seconds the receiver asked us to wait, if it said.
        status: the protocol status (HTTP or SMTP code), when there was one.
    """

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status


class Sink:
    """A destination for events. Subclasses set ``kind``, ``Options`` and ``send``."""

    kind: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    #: Deliveries in flight at once unless the sink's ``concurrency`` says otherwise.
    concurrency: ClassVar[int] = 4
    #: True: events go out in the order they were written, one at a time (a file, a
    #: terminal); False: in version order per story, several stories at once.
    in_order: ClassVar[bool] = False

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.options = options

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """Deliver ``event`` (``raw`` is its exact stored JSON text).

        Raises:
            DeliveryError: it was not delivered.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections (default: nothing to release)."""


def secret_from(value: str | None, env: str | None, what: str) -> str | None:
    """``value``, else the environment variable ``env``; error if ``env`` is named but unset."""
    if value:
        return value
    if env:
        found = os.environ.get(env)
        if not found:
            raise DeliveryError(f"environment variable {env} ({what}) is not set")
        return found
    return None
