"""Deadlines on S3 transfers, enforced on the connection itself.

botocore's timeouts are per socket operation: a server that sends one byte every few seconds, in the
headers or in the body, never trips them, and the fetch thread reading from it is never freed. Here
every fetch runs inside a :class:`Transfer` with a deadline; the sockets its requests use are
attached to it as they connect, and one watchdog thread shuts those sockets down when the deadline
passes or when the worker stops. The blocked read then fails at once, botocore's retry of it fails
at connect (an expired transfer cuts any socket attached to it immediately), and the fetch raises.

How sockets are attached: botocore sends through urllib3 connection pools whose classes it keeps in
its HTTP session; :func:`attach_deadlines` swaps in subclasses of botocore's own connection classes
whose only change is to hand their socket to the current thread's transfer. That reaches into two
private attributes of botocore (``client._endpoint.http_session._pool_classes_by_scheme``); it is
checked when the client is built (a botocore without them stops the worker at start with a clear
error) and covered by ``tests/unit/test_transfer.py`` against the locked botocore.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog
from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)

from moderation_worker.errors import ConfigurationError

log = structlog.get_logger(__name__)

_current = threading.local()  # .transfer: the Transfer the fetch on this thread runs in, if any


class Transfer:
    """One fetch's deadline and the sockets it has used. Cut once: by the deadline, or by a stop."""

    def __init__(self, url: str, deadline: float) -> None:
        self.url = url
        self.deadline = deadline
        self.cut_reason: str | None = None  # "deadline" or "stopping", once cut
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            cut = self.cut_reason is not None
        if cut:  # a retry connecting after the cut: it must not get the time the cut took away
            _shut(sock)

    def cut(self, reason: str) -> bool:
        """Shut down every socket of this transfer; False if it was already cut."""
        with self._lock:
            if self.cut_reason is not None:
                return False
            self.cut_reason = reason
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        return True


def _shut(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket's: that one would first drop the TLS object under the
    # thread reading from it. Shutting the descriptor down wakes a blocked recv with an error on Linux;
    # close() alone would not.
    with contextlib.suppress(OSError):  # already closed by its owner
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Transfers:
    """Every transfer in flight, watched by one daemon thread that cuts those past their deadline.

    ``stop``: an event that, once set, cuts every transfer in flight and every one started after
    (the worker is stopping; its records stay uncommitted for the next owner).
    """

    def __init__(
        self,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.2,
    ) -> None:
        self._stop = stop or threading.Event()
        self._clock = clock
        self._tick_s = tick_s
        self._active: set[Transfer] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="fetch-deadlines", daemon=True)
        self._watchdog.start()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @contextmanager
    def transfer(self, url: str, timeout_s: float) -> Iterator[Transfer]:
        """Run one fetch on this thread with a deadline ``timeout_s`` from now."""
        current = Transfer(url, self._clock() + timeout_s)
        if self._stop.is_set():
            current.cut("stopping")
        with self._lock:
            self._active.add(current)
        _current.transfer = current
        try:
            yield current
        finally:
            _current.transfer = None
            with self._lock:
                self._active.discard(current)

    def cut_all(self, reason: str = "stopping") -> int:
        """Cut every transfer in flight now; how many were cut."""
        with self._lock:
            active = list(self._active)
        return sum(transfer.cut(reason) for transfer in active)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._active)

    def close(self) -> None:
        """Cut what is in flight and stop the watchdog (within one tick)."""
        self.cut_all("stopping")
        self._closed.set()
        self._watchdog.join(timeout=2 * self._tick_s + 1)

    def _watch(self) -> None:
        while not self._closed.wait(self._tick_s):
            stopping = self._stop.is_set()
            now = self._clock()
            with self._lock:
                due = [t for t in self._active if stopping or t.deadline <= now]
            for transfer in due:
                reason = "stopping" if stopping else "deadline"
                if transfer.cut(reason):
                    log.warning("fetch_cut_off", url=transfer.url, reason=reason)


def _attach_to_current(sock: socket.socket | None) -> None:
    transfer = getattr(_current, "transfer", None)
    if transfer is not None and sock is not None:
        transfer.attach(sock)


class _Attaching:
    """Mixed into botocore's connection classes: each socket joins the current thread's transfer."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach_to_current(self.sock)

    def request(self, *args, **kwargs):
        # A pooled connection is reused without connecting again: attach it to this request's transfer.
        _attach_to_current(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Attaching, AWSHTTPConnection):
    pass


class _HTTPSConnection(_Attaching, AWSHTTPSConnection):
    pass


class _HTTPConnectionPool(AWSHTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(AWSHTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def attach_deadlines(client) -> None:
    """Make a boto3 client's connections attach their sockets to the current thread's transfer."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    pools = getattr(session, "_pool_classes_by_scheme", None)
    if not isinstance(pools, dict) or set(pools) != {"http", "https"}:
        raise ConfigurationError(
            "this botocore keeps its connection pools where moderation_worker.transfer cannot reach them "
            "(client._endpoint.http_session._pool_classes_by_scheme): install the locked botocore"
        )
    # The session's pool managers hold this same dict, so pools created from now on use these classes.
    pools["http"], pools["https"] = _HTTPConnectionPool, _HTTPSConnectionPool
