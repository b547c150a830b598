"""A real Kafka-protocol broker (tansu) and a real S3 endpoint (SeaweedFS) from their PyPI packages.

Used by ``moderation-worker demo`` and the integration tests. Both bind to 127.0.0.1 only,
on free ports, write their output to log files in their data dir, and are stopped (SIGTERM, then SIGKILL)
and reaped however the caller leaves: ``stop()``, a context manager, an exception during start, an atexit
hook, and on Linux a parent-death signal for when Python itself is killed.
"""

from moderation_worker.localstack.clients import S3Client, create_bucket, create_topics, s3_client
from moderation_worker.localstack.common import LOOPBACK, LocalStackError
from moderation_worker.localstack.ports import free_port, listening_addresses, port_is_free
from moderation_worker.localstack.processes import tansu_binary, weed_binary
from moderation_worker.localstack.seaweed import S3Endpoint, SeaweedS3
from moderation_worker.localstack.stack import LocalStack
from moderation_worker.localstack.tansu import TansuBroker

__all__ = [
    "LOOPBACK",
    "LocalStack",
    "LocalStackError",
    "S3Client",
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
