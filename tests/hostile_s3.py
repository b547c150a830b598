"""An S3 endpoint on 127.0.0.1 that misbehaves for chosen keys and passes everything else to a real one.

Keys containing a rule's marker get that rule; every other request goes to the upstream S3 (the
session's SeaweedFS) unchanged, Host header included, so signatures still verify there:

- ``trickle-body``: 200 and full headers, then the body one byte every ``interval_s``;
- ``trickle-headers``: the status line and headers themselves one byte every ``interval_s``;
- ``always-500``: HTTP 500 InternalError, every time;
- ``bad-request``: HTTP 400 with an error code no allowlist knows (as SeaweedFS answers odd keys).

It counts requests per rule, and the upstream ones, so tests can see that other objects were fetched.
Stop it with ``close()`` (a context manager too); its handler threads are daemons and end with their
connections.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

RULES = ("trickle-body", "trickle-headers", "always-500", "bad-request")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def _error_xml(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()


class HostileS3:
    def __init__(self, upstream: str | None = None, *, interval_s: float = 2.0) -> None:
        self.upstream = urlsplit(upstream) if upstream else None
        self.interval_s = interval_s
        self.requests: Counter[str] = Counter()
        self.stopped = threading.Event()  # set by close(): trickling handlers stop writing
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="hostile-s3")
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, what: str) -> int:
        with self._lock:
            return self.requests[what]

    def close(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HostileS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _note(self, what: str) -> None:
        with self._lock:
            self.requests[what] += 1

    def _handler_class(self):
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_HEAD(self) -> None:
                self._serve()

            def do_PUT(self) -> None:
                self._serve()

            def _serve(self) -> None:
                rule = next((r for r in RULES if r in self.path), None)
                hostile._note(rule or "upstream")
                try:
                    if rule == "trickle-body":
                        self._trickle_body()
                    elif rule == "trickle-headers":
                        self._trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
                    elif rule == "always-500":
                        self._error(500, "InternalError", "We encountered an internal error.")
                    elif rule == "bad-request":
                        self._error(400, "BadRequest", "This store does not like the key.")
                    else:
                        self._forward()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True  # the client cut us off: what the tests want

            def _trickle(self, data: bytes) -> None:
                for byte in data:
                    if hostile.stopped.wait(hostile.interval_s):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                self.close_connection = True

            def _trickle_body(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.flush()
                self._trickle(b"\x89PNG" + b"\x00" * 996)

            def _error(self, status: int, code: str, message: str) -> None:
                body = _error_xml(code, message)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                if hostile.upstream is None:
                    self._error(404, "NoSuchKey", "The specified key does not exist.")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(
                    hostile.upstream.hostname, hostile.upstream.port, timeout=30
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

        return Handler


def wait_until(condition, *, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())
