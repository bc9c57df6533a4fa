"""``apprise``: any Apprise URL (Slack, Discord, Telegram, Matrix, ntfy, json://, ...).

Apprise does not say why a target failed, so every failure is retried. The
library is imported on first use (~10 MB a daemon without such a sink never needs).
With ``image = true`` a change event's diff picture is attached (services that
take attachments: Mastodon, Telegram, Discord, email, json:// ...).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from pydantic import field_validator

from aggregator.notify import images, render
from aggregator.notify.base import DeliveryError, Options, Sink


@functools.cache
def _apprise() -> ModuleType:
    import apprise

    return apprise


class AppriseOptions(Options):
    """``url``: one Apprise URL; ``image``: attach the diff picture of each edit."""

    url: str
    image: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _apprise().Apprise().add(value):
            raise ValueError(f"not a URL Apprise understands: {value.split('://')[0]}://...")
        return value


class AppriseSink(Sink):
    """Sends each event's subject and text through Apprise."""

    kind = "apprise"
    Options = AppriseOptions

    def __init__(self, name: str, options: AppriseOptions) -> None:
        super().__init__(name, options)
        self.apprise = _apprise().Apprise()
        self.apprise.add(options.url)

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """Notify; a falsy result means the target failed."""
        types = _apprise().NotifyType
        kind = types.FAILURE if event.get("type") == "source.failing" else types.INFO
        attach = await self._attachment(event) if self.options.image else None
        ok = await self.apprise.async_notify(
            title=render.subject(event), body=render.text(event), notify_type=kind, attach=attach
        )
        if not ok:
            raise DeliveryError("Apprise could not deliver to the target (see its log)")

    async def _attachment(self, event: dict[str, Any]) -> Any:
        """The diff picture as an Apprise attachment (kept in memory), or None."""
        png = await images.picture_or_none(event, self.name)
        if png is None:
            return None
        from apprise.attachment.memory import AttachMemory

        attach = _apprise().AppriseAttachment()
        attach.add(AttachMemory(content=png, name=images.file_name(event), mimetype="image/png"))
        return attach

    async def aclose(self) -> None:
        """Stop the Chromium pictures were drawn in (started again if needed)."""
        if self.options.image:
            await images.release()
