"""``GET /livez``, ``GET /readyz`` and ``GET /metrics`` for one worker, on one thread of its own.

An asyncio server, not a thread per connection: an idle or slow connection costs a few hundred bytes
instead of a thread, so a scrape fleet or a port scanner cannot exhaust the process. What bounds it:
- every connection must send its request head within ``request_timeout_s`` (default 5 s) or is
  closed, the head is at most 8 KiB, and one request is answered per connection (``Connection:
  close``, as Prometheus' own exporters do);
- at most ``max_connections`` are open at once (default 256); beyond that a new one is closed at once,
  before it is read, so the open ones keep their answers fast;
- the listen backlog fits a scrape fleet (``backlog``, default 1024);
- ``/metrics`` is rendered at most once per ``metrics_ttl_s`` (default 1 s) and shared by every
  scraper in between: sixteen scrapers cost the worker one rendering a second, not sixteen.
The probes read a locked snapshot (``HealthState``) and answer in microseconds on this thread, whatever
the worker's own threads are doing.

Why not uvicorn (which the web parts use): it has no timeout for a connection that never sends a
request (its keep-alive timer starts after the first response), and its concurrency limit answers 503,
so idle connections would fail liveness probes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

from moderation_worker.health import HealthState
from moderation_worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

_MAX_HEAD_BYTES = 8 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Error",
    503: "Service Unavailable",
}
_PATHS = ["/livez", "/readyz", "/metrics"]


class HealthServer:
    """Serves the probes and metrics from a daemon thread running its own event loop.

    Binds in ``start()`` (an ``OSError`` there means the port is taken); port 0 binds a free port,
    then ``port`` tells which. ``stop()`` closes the listener and every connection; both are
    idempotent, and the server is a context manager.
    """

    def __init__(
        self,
        state: HealthState,
        metrics: WorkerMetrics,
        host: str = "0.0.0.0",
        port: int = 8080,
        *,
        request_timeout_s: float = 5.0,
        max_connections: int = 256,
        backlog: int = 1024,
        metrics_ttl_s: float = 1.0,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.host = host
        self._port = port
        self._request_timeout_s = request_timeout_s
        self._max_connections = max_connections
        self._backlog = backlog
        self._metrics_ttl_s = metrics_ttl_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._open: dict[asyncio.StreamWriter, bool] = {}  # open connection -> whether its head was read
        self._rendered: dict[str, tuple[float, bytes, str]] = {}  # accept header kind -> (at, body, type)
        self.refused = 0  # connections closed unread because max_connections were open

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port once started (the real one when asked for port 0), else the requested one."""
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        """Bind and serve from the server's own thread; an error binding (a port taken) is raised here."""
        if self._server is not None:
            raise RuntimeError("health server already started")
        loop = asyncio.new_event_loop()
        bound = threading.Event()
        failure: list[BaseException] = []

        async def bind() -> asyncio.Server:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            return await asyncio.start_server(
                self._serve, self.host, self._port, family=family, backlog=self._backlog,
                reuse_address=True, limit=_MAX_HEAD_BYTES,
            )  # fmt: skip

        def run() -> None:
            # The loop runs on this thread only: the caller's thread may run an event loop of its own.
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(bind())
            except BaseException as exc:
                failure.append(exc)
                bound.set()
                loop.close()
                return
            bound.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="health-server", daemon=True)
        thread.start()
        bound.wait(timeout=30)
        if failure:
            thread.join(timeout=5)
            raise failure[0]
        if self._server is None:
            raise RuntimeError("the health server did not bind within 30 s")
        self._loop, self._thread = loop, thread
        self._port = self.port
        return self

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()  # no new connections
            this = asyncio.current_task()
            deadline = loop.time() + 2.0
            while True:
                for writer in list(self._open):  # the connections still open, idle or trickling
                    writer.transport.abort()
                pending = [task for task in asyncio.all_tasks() if task is not this]
                if not pending or loop.time() > deadline:
                    break
                await asyncio.wait(pending, timeout=0.05)
            for task in pending:  # whatever is left (a connection accepted just before the close)
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        except Exception:
            log.debug("health server did not close cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        loop.close()
        self._loop = self._server = self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- one connection ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self._max_connections and not self._evict_oldest_idle():
            self.refused += 1
            writer.transport.abort()
            return
        self._open[writer] = False
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._request_timeout_s)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return  # idle, trickling, oversized or gone: close without an answer
            self._open[writer] = True
            status, content_type, body, send_body = self._answer(head)
            reason = _REASONS.get(status, "")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
                "Server: moderation-worker\r\n\r\n".encode()
                + (body if send_body else b"")
            )
            await asyncio.wait_for(writer.drain(), self._request_timeout_s)
        except (TimeoutError, ConnectionError):
            pass  # a client that does not read its answer
        except Exception:
            log.exception("health request failed")
        finally:
            self._open.pop(writer, None)
            writer.close()

    def _evict_oldest_idle(self) -> bool:
        """Make room by closing the connection that has waited longest without sending a request.

        A flood of idle connections then only ever displaces idle ones: a probe, which sends its
        request at once, still gets through. False when every open connection is being answered."""
        oldest = next((writer for writer, answering in self._open.items() if not answering), None)
        if oldest is None:
            return False
        del self._open[oldest]
        oldest.transport.abort()
        return True

    def _answer(self, head: bytes) -> tuple[int, str, bytes, bool]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain; charset=utf-8", b"bad request\n", True
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"GET or HEAD only\n", True
        send_body = method == "GET"
        path = urlsplit(target).path.rstrip("/") or "/"
        if path == "/metrics":
            accept = next(
                (line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("accept:")),
                "",
            )
            try:
                body, content_type = self._metrics_body(accept)
            except Exception:
                log.exception("metrics exposition failed")
                return 500, "text/plain; charset=utf-8", b"metrics exposition failed\n", send_body
            return 200, content_type, body, send_body
        if path in ("/livez", "/readyz"):
            report = self.state.liveness() if path == "/livez" else self.state.readiness()
            return (
                200 if report.ok else 503,
                "application/json",
                json.dumps(report.body).encode() + b"\n",
                send_body,
            )
        body = json.dumps({"error": "not found", "paths": _PATHS}).encode() + b"\n"
        return 404, "application/json", body, send_body

    def _metrics_body(self, accept: str) -> tuple[bytes, str]:
        kind = "openmetrics" if "application/openmetrics-text" in accept else "text"
        now = time.monotonic()
        cached = self._rendered.get(kind)
        if cached is not None and now - cached[0] < self._metrics_ttl_s:
            return cached[1], cached[2]
        body, content_type = self.metrics.exposition(accept)
        self._rendered[kind] = (now, body, content_type)
        return body, content_type
