"""A tiny local HTTP server that replays the demo story, one epoch at a time."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aggregator.demo import story

PATHS = {
    "/feed.xml": ("application/rss+xml; charset=utf-8", story.rss),
    "/live.html": ("text/html; charset=utf-8", story.liveblog),
}


class DemoServer:
    """Serves ``/feed.xml`` and ``/live.html`` for the current epoch on 127.0.0.1."""

    def __init__(self) -> None:
        self.epoch = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this server."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> DemoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                found = PATHS.get(self.path.split("?")[0])
                status, ctype, body = 404, "text/plain", b"not found"
                if found:
                    status, ctype, body = 200, found[0], found[1](server.epoch).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
