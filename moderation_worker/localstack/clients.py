"""Clients of the local services: topics, an S3 client with explicit timeouts, buckets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from kafka import KafkaAdminClient

from moderation_worker.topics import create_missing

S3Client = BaseClient  # boto3 builds the S3 class at run time; there is nothing narrower to name


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
    names = list(names)
    if not names:
        return
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        bootstrap_timeout_ms=int(timeout_s * 1000),
        request_timeout_ms=int(timeout_s * 1000),
        client_id="localstack-admin",
    )
    try:
        create_missing(
            admin, names, partitions=partitions, replication_factor=replication_factor, timeout_s=timeout_s
        )
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
