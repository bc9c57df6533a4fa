"""``email``: one message per event over SMTP (STARTTLS, SSL or plain), threaded per story.

The password comes from ``password_env`` (an environment variable); a plain
``password`` in the config works but is discouraged. With ``image = true`` a
change event's diff picture is attached as a PNG. Every message about
one story threads under the story's first message: the ``new`` event's
``Message-ID`` is ``<story.HASH@domain>`` and later events carry it in
``In-Reply-To``/``References``. Message ids derive from event ids, so a
re-sent event has the same ``Message-ID``. A 5xx refusal of the message
is permanent; authentication, connection and 4xx errors are retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from aggregator.notify import images, render
from aggregator.notify.base import DeliveryError, Options, Sink, secret_from
from aggregator.timeutil import setting_duration

_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class EmailOptions(Options):
    """SMTP server, security, credentials and addresses."""

    host: str
    port: int | None = None
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    password: str | None = None
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    timeout: Annotated[float, BeforeValidator(setting_duration)] = 30.0
    #: CA certificates (PEM) to trust instead of the system's, for a private CA.
    ca_file: str | None = None
    #: Attach the diff picture of each edit (a PNG, see docs/diff-images.md).
    image: bool = False


def thread_id(event: dict[str, Any], domain: str) -> str | None:
    """The Message-ID of the story's first message (``None`` for non-story events)."""
    if event.get("type") != "change":
        return None
    key = f"{event['source']['name']}\0{event['entry']['key']}"
    return f"<story.{hashlib.sha256(key.encode()).hexdigest()[:24]}@{domain}>"


def build_message(event: dict[str, Any], sender: str, to: list[str]) -> EmailMessage:
    """The email for ``event``: subject, plain text (and HTML for digests), threading headers."""
    domain = sender.rpartition("@")[2] or "aggregator.invalid"
    msg = EmailMessage()
    msg["Subject"] = render.subject(event)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(usegmt=True)
    root = thread_id(event, domain)
    if root and event.get("kind") == "new" and not event.get("folded"):
        msg["Message-ID"] = root
    else:
        msg["Message-ID"] = f"<{event['id']}@{domain}>"
        if root:
            msg["In-Reply-To"] = root
            msg["References"] = root
    msg["X-Aggregator-Event"] = event["id"]
    msg.set_content(render.text(event))
    if event.get("type") == "digest" and event.get("html"):
        msg.add_alternative(event["html"], subtype="html")
    return msg


class EmailSink(Sink):
    """Sends each event as an email."""

    kind = "email"
    concurrency = 2
    Options = EmailOptions

    async def send(self, event: dict[str, Any], raw: str) -> None:
        """Build the message and send it on a worker thread."""
        password = secret_from(self.options.password, self.options.password_env, "SMTP password")
        msg = build_message(event, self.options.sender, self.options.to)
        if self.options.image and (png := await images.picture_or_none(event, self.name)):
            msg.add_attachment(
                png, maintype="image", subtype="png", filename=images.file_name(event)
            )
        await asyncio.to_thread(self._send, msg, password)

    async def aclose(self) -> None:
        """Stop the Chromium pictures were drawn in (started again if needed)."""
        if self.options.image:
            await images.release()

    def _send(self, msg: EmailMessage, password: str | None) -> None:
        opts = self.options
        port = opts.port or _PORTS[opts.security]
        try:
            context = ssl.create_default_context(cafile=opts.ca_file)
            if opts.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    opts.host, port, timeout=opts.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(opts.host, port, timeout=opts.timeout)
            with smtp:
                if opts.security == "starttls":
                    smtp.starttls(context=context)
                if opts.username:
                    smtp.login(opts.username, password or "")
                smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP login refused: {exc}", status=exc.smtp_code) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(code >= 500 for code in codes)
            reason = f"recipients refused: {exc.recipients}"
            raise DeliveryError(reason, permanent=permanent) from exc
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
            raise DeliveryError(f"SMTP {code}: {exc.smtp_error!r}", permanent=code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP error: {type(exc).__name__}: {exc}") from exc
