"""A loopback HTTP proxy in front of the S3 server that fails chosen objects on demand.

Requests whose path contains a key of `failing` get `503 InternalError` (what an overloaded
store answers), or with `reset`, a connection closed without an answer; `failing[key]` is how
many such requests are left (None: every one). Other requests are forwarded unchanged.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULT_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


class S3FaultProxy:
    def __init__(self, upstream: str, reset: bool = False) -> None:
        self.failing: dict[str, int | None] = {}
        self.faults = 0
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.take_fault(self.path):
                    if reset:
                        self.close_connection = True  # No status line: the client sees a reset.
                        return
                    self._answer(503, {"Content-Type": "application/xml"}, FAULT_BODY)
                    return
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = upstream.getresponse()
                headers = {k: v for k, v in response.getheaders()
                           if k.lower() not in ("transfer-encoding", "connection")}  # fmt: skip
                self._answer(response.status, headers, response.read())
                upstream.close()

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    # A HEAD answer has no body but keeps the object's Content-Length.
                    if key.lower() != "content-length" or self.command == "HEAD":
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def take_fault(self, path: str) -> bool:
        """Whether the request for `path` fails; counts it down."""
        for key, left in self.failing.items():
            if key in path and (left is None or left > 0):
                self.failing[key] = None if left is None else left - 1
                self.faults += 1
                return True
        return False

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
