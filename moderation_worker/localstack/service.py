"""One local service: a child process on free loopback ports, started, probed and stopped for sure."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from moderation_worker.localstack.common import (
    _OUTPUT_TAIL_CHARS,
    _POLL_S,
    _PORT_ATTEMPTS,
    _PORT_CONFLICT_MARKERS,
    LocalStackError,
    _PortConflict,
)
from moderation_worker.localstack.ports import _listens_on, free_port
from moderation_worker.localstack.processes import _Process

log = structlog.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------------


_live_services: set[_Service] = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    # Last resort for callers that never called stop(): nothing may outlive the Python process.
    with _live_lock:
        leftovers = list(_live_services)
    for service in leftovers:
        service.close()


atexit.register(_stop_all_at_exit)


class _Service:
    """Start/stop/readiness shared by both services. Subclasses name their command and their probe."""

    name = "service"
    port_offsets: tuple[int, ...] = (0,)
    stop_grace_s = 10.0

    def __init__(self, data_dir: Path | None, port: int | None, start_timeout_s: float) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-")) if data_dir is None else Path(data_dir)
        self._port = port  # once started, kept for every later start
        self.start_timeout_s = start_timeout_s
        self._proc: _Process | None = None

    # -- subclass hooks ---------------------------------------------------------------------------
    def _argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _probe(self) -> None:
        """Raise if the service does not yet answer a real request."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Files the process needs before it starts."""

    def _after_exit(self, port: int) -> None:
        """Clean-up once the process is gone."""

    # -- public -----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalStackError(f"{self.name} has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.exit_code() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def start(self) -> Self:
        """Start and wait until a real request succeeds. A no-op if already running."""
        if self.running:
            return self
        self._end(lambda proc: proc.kill(), "localstack.exited")  # reap one that died on its own
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        # Later starts reuse the ports of the first, so clients configured with the endpoint keep working.
        fresh = (free_port(self.port_offsets) for _ in range(_PORT_ATTEMPTS))
        choices = [self._port] if self._port else fresh
        conflict: _PortConflict | None = None
        for port in choices:
            try:
                self._launch(port)
            except _PortConflict as exc:
                conflict = exc
                log.info("localstack.port_conflict", service=self.name, port=port)
            else:
                return self
        assert conflict is not None
        raise conflict

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; the data dir stays for a later start()."""
        self._end(lambda proc: proc.stop(self.stop_grace_s), "localstack.stopped")

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data dir stays for a later start()."""
        self._end(lambda proc: proc.kill(), "localstack.killed")

    def close(self) -> None:
        """stop(), and remove the data dir if it is a temporary one this object made."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------
    def _launch(self, port: int) -> None:
        previous_port, self._port = self._port, port
        proc = _Process(self.name, self._argv(port), self.log_path)
        started = time.monotonic()
        proc.start()
        self._proc = proc
        with _live_lock:
            _live_services.add(self)
        try:
            self._wait_ready(proc, port)
        except BaseException:
            # Never leave a half-started process behind, whatever interrupted the start.
            self._end(lambda p: p.kill(), "localstack.start_aborted")
            self._port = previous_port
            raise
        log.info(
            "localstack.started",
            service=self.name,
            pid=proc.pid,
            port=port,
            seconds=round(time.monotonic() - started, 3),
        )

    def _wait_ready(self, proc: _Process, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while True:
            full_output = proc.output()
            output = full_output[-_OUTPUT_TAIL_CHARS:]  # enough to diagnose, short enough to read
            if any(marker in full_output.lower() for marker in _PORT_CONFLICT_MARKERS):
                raise _PortConflict(
                    f"{self.name}: a port in {port}+{list(self.port_offsets)} is taken; output:\n{output}"
                )
            code = proc.exit_code()
            if code is not None:
                raise LocalStackError(f"{self.name} exited with code {code} during start; output:\n{output}")
            if proc.pid is not None and _listens_on(proc.pid, port):
                try:
                    self._probe()
                    return
                except Exception as exc:  # any failure of the probe means "not ready yet"
                    last_error = exc
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"{self.name} on port {port} not ready after {self.start_timeout_s:.0f} s "
                    f"(last probe error: {last_error!r}); output:\n{output}"
                )
            time.sleep(_POLL_S)

    def _end(self, how: Callable[[_Process], None], event: str) -> None:
        proc = self._proc
        if proc is None:
            return
        started = time.monotonic()
        pid = proc.pid
        how(proc)
        self._proc = None
        with _live_lock:
            _live_services.discard(self)
        if self._port is not None:
            self._after_exit(self._port)
        log.info(event, service=self.name, pid=pid, seconds=round(time.monotonic() - started, 3))
