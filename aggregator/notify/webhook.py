"""``webhook``: HTTP POST of the event JSON, signed the Standard Webhooks way.

With a secret, every request carries ``webhook-id`` (the event id),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature``:
``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where the key
is the base64 part of a ``whsec_...`` secret (any other secret is used as
its UTF-8 bytes). 2xx is delivered; 408, 429, 5xx and transport errors are
retried (``Retry-After`` honoured); any other status is a permanent refusal.

With ``image = true`` a change event with versions before and after carries
``"image"``: the URL where ``aggregator serve`` (at ``image_url``) draws that
edit's diff picture on demand. Nothing is drawn when the event is sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Annotated, Any

import httpx
from pydantic import BeforeValidator, Field, field_validator, model_validator

from aggregator.fetch import describe_httpx_error, parse_retry_after
from aggregator.notify import images
from aggregator.notify.base import DeliveryError, Options, Sink, secret_from
from aggregator.timeutil import setting_duration

RETRYABLE = {408, 429}


class WebhookOptions(Options):
    """``url``; ``secret_env`` (or ``secret``) to sign; extra ``headers``; ``timeout``."""

    url: str
    secret_env: str | None = None
    secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Annotated[float, BeforeValidator(setting_duration)] = 15.0
    #: Add ``"image"``, the URL of the edit's diff picture under ``image_url``.
    image: bool = False
    #: Where ``aggregator serve`` is reached by the receiver, e.g. https://news.example/agg
    image_url: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @model_validator(mode="after")
    def _image_url(self) -> WebhookOptions:
        if self.image and not self.image_url.startswith(("http://", "https://")):
            raise ValueError(
                "image_url: with image = true, give the http(s) URL of aggregator serve"
                " (pictures are drawn there on demand)"
            )
        return self


def image_link(base: str, event: dict[str, Any]) -> str | None:
    """The URL of the event's diff picture under ``aggregator serve`` at ``base``, or None."""
    found = images.versions(event)
    if found is None:
        return None
    entry, before, after = found
    return f"{base.rstrip('/')}/story/{entry}/diff/{before}-{after}.png"


def refusal(status: int, phrase: str, body: str) -> str:
    """``HTTP 400 Bad Request: what the receiver said`` (its phrase alone when it said nothing)."""
    said = " ".join(body.split())[:200]
    head = f"HTTP {status} {phrase}".strip()
    return f"{head}: {said}" if said else head


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for ``body`` (Standard Webhooks, v1)."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    message = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSink(Sink):
    """POSTs each event to a URL."""

    kind = "webhook"
    concurrency = 8
    Options = WebhookOptions

    def __init__(self, name: str, options: WebhookOptions) -> None:
        super().__init__(name, options)
        self.client = httpx.AsyncClient(timeout=options.timeout, follow_redirects=False)

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """POST ``raw`` (plus ``image`` when asked for); classify the answer."""
        if self.options.image and (link := image_link(self.options.image_url, event)):
            raw = images.with_key(raw, "image", link)
        body = raw.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "aggregator-webhook",
            **self.options.headers,
            "webhook-id": event["id"],
        }
        secret = secret_from(self.options.secret, self.options.secret_env, "webhook secret")
        if secret:
            now = int(time.time())
            headers["webhook-timestamp"] = str(now)
            headers["webhook-signature"] = sign(secret, event["id"], now, body)
        try:
            response = await self.client.post(self.options.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(describe_httpx_error(exc)) from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = refusal(status, response.reason_phrase, response.text)
        permanent = 400 <= status < 500 and status not in RETRYABLE
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise DeliveryError(reason, permanent=permanent, retry_after=retry_after, status=status)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
