"""Real local receivers for notification tests: a webhook endpoint on 127.0.0.1.

``WebhookReceiver`` answers POSTs with scripted statuses, verifies Standard
Webhooks signatures when given the secret, can be taken down (socket closed,
connections refused) and brought back on the same port, and can hold a
request unanswered until released (to kill a sender between send and ack).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.server import QuietHTTPServer


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    signature_ok: bool | None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """Check a Standard Webhooks signature (independently of the code under test)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    for part in headers.get("webhook-signature", "").split():
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(sig), expected):
            return True
    return False


class WebhookReceiver:
    """An HTTP endpoint that records every POST and answers from a script."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.received: list[Received] = []
        self.script: list[tuple[int, dict[str, str]]] = []  # answers used first, in order
        self.default_status = 200
        #: When set: the events it returns True for are answered 503 (a per-event outage).
        self.refuse: Callable[[dict[str, Any]], bool] | None = None
        self.hold = threading.Event()  # set: hold requests until released
        self.release = threading.Event()
        self.got_request = threading.Event()
        self.lock = threading.Lock()
        self.port = 0
        self.httpd: QuietHTTPServer | None = None
        self.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        """Listen (again) on the same port."""
        self.httpd = QuietHTTPServer(("127.0.0.1", self.port), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the socket: connections are refused until ``start``."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def ids(self, status: int = 200) -> list[str]:
        """Event ids of the POSTs answered with ``status``, in arrival order."""
        with self.lock:
            return [r.json["id"] for r in self.received if r.status == status]

    def _answer(self, body: bytes = b"") -> tuple[int, dict[str, str]]:
        if self.refuse is not None and self.refuse(json.loads(body or b"{}")):
            return 503, {}
        with self.lock:
            return self.script.pop(0) if self.script else (self.default_status, {})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was received
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.got_request.set()
                if receiver.hold.is_set():
                    receiver.release.wait(30)
                status, extra = receiver._answer(body)
                ok = verify(receiver.secret, headers, body) if receiver.secret else None
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body, status, ok))
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(b"ok")

        return Handler
