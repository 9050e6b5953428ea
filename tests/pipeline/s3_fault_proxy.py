"""A loopback HTTP proxy in front of the S3 server that fails chosen objects on demand.

Requests whose method and path (`"GET /bucket/key?query"`) contain a key of `failing` get an
error answer from `answers` in turn (by default `503 InternalError`, what an overloaded store
answers; `SLOW_DOWN` and `TOO_MANY_REQUESTS` are a throttling store's); with `reset`, a
connection closed without an answer; with `cut`, the real answer with half its body, then the
connection closed. `failing[key]` is how many such requests are left (None: every one). Other
requests are forwarded unchanged. Every request is recorded in `requests`, with its time, so a
test can count the requests for one object and the gaps between them.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ErrorAnswer:
    """An S3 error answer: HTTP status and the `<Error>` body's code and message."""

    status: int
    code: str
    message: str

    def body(self) -> bytes:
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{self.code}</Code>'
            f"<Message>{self.message}</Message></Error>"
        ).encode()


INTERNAL_ERROR = ErrorAnswer(503, "InternalError", "We encountered an internal error.")
SLOW_DOWN = ErrorAnswer(503, "SlowDown", "Please reduce your request rate.")
TOO_MANY_REQUESTS = ErrorAnswer(429, "SlowDown", "Please reduce your request rate.")


@dataclass(frozen=True)
class Request:
    """One request the proxy received: when (time.monotonic), what, and whether it failed."""

    at: float
    target: str  # "GET /bucket/key?query"
    failed: bool


class S3FaultProxy:
    def __init__(
        self,
        upstream: str,
        reset: bool = False,
        answers: tuple[ErrorAnswer, ...] = (INTERNAL_ERROR,),
        cut: bool = False,
    ) -> None:
        self.failing: dict[str, int | None] = {}
        self.faults = 0
        self.requests: list[Request] = []
        self._lock = threading.Lock()  # The server answers each request on its own thread.
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.take_fault(f"{self.command} {self.path}")
                if fault is not None and not cut:
                    if reset:
                        self.close_connection = True  # No status line: the client sees a reset.
                        return
                    answer = answers[fault % len(answers)]
                    headers = {"Content-Type": "application/xml"}
                    self._answer(answer.status, headers, answer.body())
                    return
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = upstream.getresponse()
                headers = {k: v for k, v in response.getheaders()
                           if k.lower() not in ("transfer-encoding", "connection")}  # fmt: skip
                self._answer(response.status, headers, response.read(), fault is not None)
                upstream.close()

            def _answer(
                self, status: int, headers: dict[str, str], body: bytes, cut_body: bool = False
            ) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    # A HEAD answer has no body but keeps the object's Content-Length.
                    if key.lower() != "content-length" or self.command == "HEAD":
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    # Cut: half the announced body, then the connection closes (HTTP/1.0).
                    self.wfile.write(body[: len(body) // 2] if cut_body else body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def take_fault(self, target: str) -> int | None:
        """Records the request for `target` ("GET /bucket/key") and whether it is to fail.

        Returns:
            None for a request to forward, else how many faults came before this one (which
            of `answers` it gets); its key's count of faults left goes down by one.
        """
        with self._lock:
            fault = None
            for key, left in self.failing.items():
                if key in target and (left is None or left > 0):
                    self.failing[key] = None if left is None else left - 1
                    fault, self.faults = self.faults, self.faults + 1
                    break
            self.requests.append(Request(time.monotonic(), target, fault is not None))
            return fault

    def requests_for(self, key: str) -> list[Request]:
        """The requests so far whose method and path contain `key`, in the order received."""
        with self._lock:
            return [request for request in self.requests if key in request.target]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
