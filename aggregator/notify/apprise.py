"""``apprise``: any Apprise URL (Slack, Discord, Telegram, Matrix, ntfy, json://, ...).

Apprise does not say why a target failed, so every failure is retried.
"""

from __future__ import annotations

from typing import Any

import apprise as apprise_lib
from pydantic import field_validator

from aggregator.notify import render
from aggregator.notify.base import DeliveryError, Options, Sink


class AppriseOptions(Options):
    """``url``: one Apprise URL."""

    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not apprise_lib.Apprise().add(value):
            raise ValueError(f"not a URL Apprise understands: {value.split('://')[0]}://...")
        return value


class AppriseSink(Sink):
    """Sends each event's subject and text through Apprise."""

    kind = "apprise"
    Options = AppriseOptions

    def __init__(self, name: str, options: AppriseOptions) -> None:
        super().__init__(name, options)
        self.apprise = apprise_lib.Apprise()
        self.apprise.add(options.url)

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """Notify; a falsy result means the target failed."""
        kind = apprise_lib.NotifyType.FAILURE if event.get("type") == "source.failing" else None
        ok = await self.apprise.async_notify(
            title=render.subject(event),
            body=render.text(event),
            notify_type=kind or apprise_lib.NotifyType.INFO,
        )
        if not ok:
            raise DeliveryError("Apprise could not deliver to the target (see its log)")
