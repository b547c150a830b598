"""tansu and SeaweedFS together: the embedded stack of the demo."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from moderation_worker.localstack.seaweed import S3Endpoint, SeaweedS3
from moderation_worker.localstack.tansu import TansuBroker


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
