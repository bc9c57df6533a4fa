"""A real HTTP server on 127.0.0.1 for tests: evolving resources, conditional GET, faults.

Each path maps to a ``Resource`` whose body, headers and status a test changes
between polls. The server honours ``If-None-Match`` / ``If-Modified-Since``
(unless the resource turns validators off), can gzip, delay, or run any
handler function for hostile behaviour, and logs every request it answered.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Resource:
    """What one path serves now."""

    body: bytes = b""
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    validators: bool = True  # send ETag/Last-Modified and answer 304
    gzip: bool = False
    delay: float = 0.0
    handler: Handler | None = None  # full control, for hostile cases
    modified: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(self.body).hexdigest()[:16] + '"'


@dataclass
class Request:
    """A request the server answered."""

    method: str
    path: str
    headers: dict[str, str]
    status: int
    at: float
    body: bytes = b""  # what a 200 answer carried


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading server that does not print a traceback when a client hangs up."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class TestServer:
    """Serve ``Resource`` objects by path on 127.0.0.1 (a free port)."""

    __test__ = False  # not a pytest class

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.resources: dict[str, Resource] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.httpd = QuietHTTPServer((host, 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> TestServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def serve(self, path: str, body: bytes | str = b"", **kwargs: Any) -> Resource:
        """Serve ``body`` at ``path`` (replacing what was there), keeping the old mtime if equal."""
        data = body.encode() if isinstance(body, str) else body
        with self.lock:
            old = self.resources.get(path)
            res = Resource(body=data, **kwargs)
            if old is not None and old.body == data:
                res.modified = old.modified
            self.resources[path] = res
        return res

    def hits(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    status, body, send = server._answer(self)
                    with server.lock:  # recorded before the answer: a client that has it sees it
                        server.requests.append(
                            Request("GET", self.path, dict(self.headers), status, time.time(), body)
                        )
                    send()
                finally:
                    with server.lock:
                        server.active -= 1

            do_POST = do_GET

        return H

    def _answer(self, req: BaseHTTPRequestHandler) -> tuple[int, bytes, Callable[[], object]]:
        """The status and body to record for ``req``, and the call that sends the answer."""
        with self.lock:
            res = self.resources.get(req.path.split("?")[0])
        if res is None:
            return 404, b"", partial(_send, req, 404, b"not found", {"Content-Type": "text/plain"})
        if res.delay:
            time.sleep(res.delay)
        if res.handler is not None:
            return res.status, b"", partial(res.handler, req)
        headers = {"Content-Type": res.content_type, **res.headers}
        if res.validators and res.status == 200:
            headers["ETag"] = res.etag
            headers["Last-Modified"] = formatdate(res.modified, usegmt=True)
            if req.headers.get("If-None-Match") == res.etag:
                return 304, b"", partial(_send, req, 304, b"", headers)
        body = res.body
        if res.gzip and "gzip" in req.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return res.status, res.body, partial(_send, req, res.status, body, headers)


def _send(req: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> int:
    req.send_response(status)
    for name, value in headers.items():
        req.send_header(name, value)
    if status != 304:
        req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    if status != 304 and body:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            req.wfile.write(body)
    return status
