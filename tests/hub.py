"""A WebSub hub for tests, written from the W3C Recommendation, on 127.0.0.1.

It takes subscription requests (section 5.1: ``hub.callback``, ``hub.mode``,
``hub.topic``, ``hub.lease_seconds``, ``hub.secret``), answers 202 and then verifies
intent from a thread (5.3: a GET with ``hub.challenge``; the subscription holds only
if the answer is 2xx and its body is exactly the challenge). ``publish`` distributes
content to the topic's subscribers (7: ``Link`` headers rel=hub and rel=self, and
``X-Hub-Signature: sha256=...``, the HMAC of the body under the subscriber's secret).
A test can make it refuse requests, deny subscriptions (5.2), grant short leases, or
send what a forger would.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

from tests.server import QuietHTTPServer


@dataclass
class Subscription:
    """A verified subscription, as the hub holds it."""

    callback: str
    topic: str
    secret: str | None
    expires: float


@dataclass
class Verification:
    """One verification of intent the hub sent, and how the subscriber answered."""

    mode: str
    callback: str
    topic: str
    status: int
    echoed: bool
    at: float = field(default_factory=time.time)


@dataclass
class Delivery:
    """One content distribution request the hub sent, and the answer."""

    callback: str
    status: int
    seconds: float
    sent_at: float


class Hub:
    """A hub at ``url``; each request it got is in ``requests``."""

    def __init__(self, *, lease_seconds: int = 600) -> None:
        self.lease_seconds = lease_seconds
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.requests: list[dict[str, str]] = []
        self.verifications: list[Verification] = []
        #: Answer subscription requests with this status (and no verification).
        self.refuse: int | None = None
        #: Deny subscription requests (a ``hub.mode=denied`` GET after the 202).
        self.deny = False
        self.lock = threading.Lock()
        self.verified = threading.Condition(self.lock)
        self.client = httpx.Client(timeout=10, trust_env=False)
        self.httpd = QuietHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.client.close()

    # -- requests from subscribers -------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                status, text = hub._request(form)
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def _request(self, form: dict[str, str]) -> tuple[int, str]:
        with self.lock:
            self.requests.append(form)
        mode, topic, callback = (form.get(k, "") for k in ("hub.mode", "hub.topic", "hub.callback"))
        if mode not in ("subscribe", "unsubscribe") or not topic or not callback:
            return 400, "hub.mode, hub.topic and hub.callback are required"
        if len(form.get("hub.secret", "").encode()) >= 200:
            return 400, "hub.secret must be under 200 bytes"
        if self.refuse is not None:
            return self.refuse, "refused by the test hub"
        work = self._deny if self.deny and mode == "subscribe" else self._verify
        threading.Thread(target=work, args=(form,), daemon=True).start()
        return 202, "accepted: verifying"

    def _verify(self, form: dict[str, str]) -> None:
        mode, topic, callback = form["hub.mode"], form["hub.topic"], form["hub.callback"]
        challenge = secrets.token_urlsafe(24)
        params = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge}
        if mode == "subscribe":
            params["hub.lease_seconds"] = str(self.lease_seconds)
        answer = self.client.get(callback, params=params)
        echoed = 200 <= answer.status_code < 300 and answer.text == challenge
        with self.verified:
            self.verifications.append(
                Verification(mode, callback, topic, answer.status_code, echoed)
            )
            if echoed and mode == "subscribe":
                expires = time.time() + self.lease_seconds
                secret = form.get("hub.secret")
                self.subscriptions[(topic, callback)] = Subscription(
                    callback, topic, secret, expires
                )
            elif echoed:
                self.subscriptions.pop((topic, callback), None)
            self.verified.notify_all()

    def _deny(self, form: dict[str, str]) -> None:
        params = {"hub.mode": "denied", "hub.topic": form["hub.topic"], "hub.reason": "no thanks"}
        answer = self.client.get(form["hub.callback"], params=params)
        with self.verified:
            self.verifications.append(
                Verification(
                    "denied", form["hub.callback"], form["hub.topic"], answer.status_code, False
                )
            )
            self.verified.notify_all()

    def wait_verified(self, count: int = 1, timeout: float = 10.0) -> list[Verification]:
        """Block until ``count`` verifications were answered; return them all."""
        with self.verified:
            self.verified.wait_for(lambda: len(self.verifications) >= count, timeout)
            return list(self.verifications)

    # -- content distribution ---------------------------------------------------------------

    def subscribers(self, topic: str) -> list[Subscription]:
        now = time.time()
        with self.lock:
            return [s for s in self.subscriptions.values() if s.topic == topic and s.expires > now]

    def publish(
        self, topic: str, body: bytes, content_type: str = "application/rss+xml"
    ) -> list[Delivery]:
        """Send ``body`` to every live subscriber of ``topic``, signed with its secret."""
        return [
            self.deliver(s.callback, body, topic=topic, secret=s.secret, content_type=content_type)
            for s in self.subscribers(topic)
        ]

    def deliver(
        self,
        callback: str,
        body: bytes,
        *,
        topic: str,
        secret: str | None,
        content_type: str = "application/rss+xml",
        headers: dict[str, str] | None = None,
    ) -> Delivery:
        """One content distribution request (a forger's, if ``secret`` is not the real one)."""
        sent = {
            "Content-Type": content_type,
            "Link": f'<{self.url}>; rel="hub", <{topic}>; rel="self"',
        }
        if secret is not None:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            sent["X-Hub-Signature"] = f"sha256={digest}"
        sent |= headers or {}
        started = time.perf_counter()
        sent_at = time.time()
        answer = self.client.post(callback, content=body, headers=sent)
        return Delivery(callback, answer.status_code, time.perf_counter() - started, sent_at)

    def challenge(self, callback: str, **params: str) -> httpx.Response:
        """A verification request of the test's own making (as a stranger could send)."""
        return self.client.get(callback + "?" + urlencode(params))
