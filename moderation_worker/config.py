"""One frozen settings object, read from ``MODERATION_*`` environment variables and overridable by flags.

Every field here is documented in the README's configuration table. Secrets are ``SecretStr`` so
they never reach a log line or a repr.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "MODERATION_"
# Variables under our prefix that belong to something else than the worker's settings: the test
# suite's backends (tests/conftest.py). They are not misspellings. Other commands add theirs here.
FOREIGN_PREFIXES: tuple[str, ...] = ("MODERATION_TEST_",)
DEFAULT_POLICY_PACK = Path("policies/default.yaml")
DEFAULT_MODEL_ID = "zai-org/GLM-4.6V-Flash"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        protected_namespaces=(),
        env_parse_none_str="none",  # MODERATION_HEALTH_PORT=none turns the server off
    )

    # --- Kafka -----------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM"] | None = Field(
        None,
        description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with SASL_*; AWS_MSK_IAM (MSK's IAM auth, with"
        " SASL_SSL) signs with the instance's AWS credentials and takes no user name or password.",
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret; never logged).")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for SSL / SASL_SSL.")
    kafka_bootstrap_timeout_s: float = Field(
        30.0, gt=0, description="Longest start-up waits for the brokers to answer before it gives up."
    )
    group_id: str = Field("moderation-worker", description="Consumer group all workers join.")
    input_topic: str = Field("moderation.requests", description="Moderation requests are consumed from here.")
    results_topic: str = Field("moderation.results", description="One verdict per processed event.")
    review_topic: str = Field("moderation.review", description="Verdicts whose decision is review or block.")
    dlq_topic: str = Field("moderation.dlq", description="Bad events, untouched, with the reason in headers.")
    batch_size: int = Field(16, ge=1, le=10_000, description="Records polled and processed as one batch.")
    poll_timeout_ms: int = Field(500, ge=1, description="Longest wait for records in one poll.")
    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="Kafka evicts a worker that does not poll within this."
    )
    session_timeout_ms: int = Field(45_000, ge=1000, description="Group session timeout (failure detection).")
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Group heartbeat interval.")
    producer_acks: Literal["all", "1"] = Field("all", description="'all' for no loss on broker failover.")
    producer_compression: Literal["gzip", "snappy", "lz4", "zstd"] | None = Field(
        None, description="Compression of published records (none by default)."
    )
    producer_max_request_bytes: int = Field(
        1024 * 1024, ge=64 * 1024, description="Largest record the producer sends; match the broker's limit."
    )
    delivery_timeout_s: float = Field(60.0, gt=0, description="Longest wait for the broker to ack a batch.")

    # --- S3 --------------------------------------------------------------------------------------
    s3_endpoint_url: str | None = Field(None, description="MinIO / SeaweedFS URL; unset for AWS.")
    s3_region: str = Field("us-east-1", description="Region used to sign S3 requests.")
    s3_access_key_id: SecretStr | None = Field(None, description="Unset: the standard AWS chain.")
    s3_secret_access_key: SecretStr | None = Field(None, description="Secret; never logged.")
    s3_connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect timeout per S3 request.")
    s3_read_timeout_s: float = Field(30.0, gt=0, description="Socket read timeout per S3 request.")
    s3_max_attempts: int = Field(3, ge=1, description="botocore attempts per request (adaptive mode).")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "path", description="path suits MinIO/SeaweedFS; virtual suits AWS."
    )
    fetch_concurrency: int = Field(8, ge=1, le=256, description="Concurrent S3 fetches per batch.")
    hash_list_path: Path | None = Field(
        None,
        description="A known-bad PDQ hash list (CSV: hash,policy,label,source; reloaded when it changes): "
        "a matching image is blocked and the model skipped. Needs the specialists extra.",
    )
    hash_max_distance: int = Field(
        31, ge=0, le=128, description="Hamming distance (of 256 bits) within which a hash matches."
    )
    hash_min_quality: int = Field(
        50, ge=0, le=100, description="PDQ quality below which an image is never matched (flat, tiny)."
    )
    specialists_concurrency: int = Field(
        1,
        ge=1,
        le=64,
        description="Specialist analyses (OCR, nudity) run at once, on the fetch threads, when the pack "
        "combines their signals; one leaves the model the other cores.",
    )
    fetch_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Deadline of one object's whole transfer, headers and body; past it the "
        "connection is cut and the fetch retried.",
    )
    fetch_batch_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Longest a batch waits for its fetches; later ones are retried. Keep it "
        "well under the max poll interval.",
    )
    object_max_attempts: int = Field(
        6,
        ge=1,
        description="Transient failures of one object, while the store serves others, before it is "
        "dead-lettered (retries_exhausted).",
    )

    # --- Images ----------------------------------------------------------------------------------
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Larger objects: object_too_large.")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Larger: decompression_bomb.")
    max_image_edge: int = Field(1024, ge=16, description="Longest edge after resize.")
    # NoDecode: the environment gives "JPEG,PNG", not JSON.
    allowed_formats: Annotated[frozenset[str], NoDecode] = Field(
        frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}),
        description="Comma-separated Pillow format names.",
    )

    # --- Model and policies ----------------------------------------------------------------------
    model_id: str = Field(DEFAULT_MODEL_ID, description="Hugging Face id or local path.")
    model_revision: str | None = Field(None, description="Hub branch, tag or commit; pin it in production.")
    model_local_files_only: bool = Field(False, description="Never reach the Hugging Face Hub (air-gapped).")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on CPU."
    )
    score_batch_pairs: int = Field(64, ge=1, description="Most (image, policy) rows per forward pass.")
    score_token_budget: int = Field(
        16_384,
        ge=256,
        description="Most tokens one pass holds: padded prompt tokens, or rows x cached tokens (memory).",
    )
    scoring_strategy: Literal["auto", "shared_prefix", "reused_features", "plain"] = Field(
        "auto", description="auto: the fastest path the model passes a probe on; others force one."
    )
    scoring_suffix_layout: Literal["auto", "packed", "rows"] = Field(
        "auto",
        description="With shared_prefix: packed (every policy's suffix in one row per image, the prefix KV "
        "held once, a block attention mask) or rows (one row per policy, each with a copy of the prefix). "
        "auto: packed where it passes the start-up probe and, on a GPU, is also the faster.",
    )
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] | None = Field(
        None, description="Attention kernels; None: transformers' default (sdpa where supported)."
    )
    model_compile: bool = Field(False, description="torch.compile the model (GPU; slower first batches).")
    policy_pack: Path = Field(
        DEFAULT_POLICY_PACK,
        description="The policy pack YAML file (relative: the current folder, then the checkout).",
    )

    # --- Caches ----------------------------------------------------------------------------------
    feature_cache_bytes: int = Field(512 * 1024 * 1024, ge=0, description="0 disables it.")
    verdict_cache_entries: int = Field(100_000, ge=0, description="0 disables it.")

    # --- Overlap -------------------------------------------------------------------------------
    prepare_ahead: bool = Field(
        True, description="Fetch and decode the next batch while the model scores this one."
    )

    # --- Retries of transient failures -----------------------------------------------------------
    retry_initial_backoff_s: float = Field(
        0.5, gt=0, description="First backoff after an infrastructure failure."
    )
    retry_max_backoff_s: float = Field(
        30.0, gt=0, description="Backoff cap; retries never end in a dead letter."
    )

    # --- Process ---------------------------------------------------------------------------------
    worker_id: str = Field(
        default_factory=_default_worker_id, description="Named in verdicts and dead letters."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log threshold.")
    log_format: Literal["json", "console"] = Field("json", description="json: one JSON object per line.")
    max_events: int | None = Field(None, ge=1, description="Stop after this many events (backfills).")
    idle_timeout_s: float | None = Field(None, gt=0, description="Stop after this long with no records.")
    health_port: int | None = Field(8080, ge=0, le=65535, description="Health and metrics; None: off.")
    health_host: str = Field("0.0.0.0", description="Address the health and metrics server binds.")
    health_stall_s: float | None = Field(
        None,
        gt=0,
        description="Liveness fails when the loop has not turned for this long; None: max poll interval.",
    )
    health_startup_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Liveness holds while start-up (model load, connecting) takes up to this long.",
    )
    ready_requires_assignment: bool = Field(
        True, description="Readiness needs partitions; turn off when replicas outnumber partitions."
    )

    @field_validator("allowed_formats", mode="before")
    @classmethod
    def _split_formats(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip().upper() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_formats")
    @classmethod
    def _known_formats(cls, value: frozenset[str]) -> frozenset[str]:
        # A typo (JPG for JPEG) would otherwise fail every event, as a retry, forever.
        from PIL import Image

        Image.init()
        unknown = sorted(value - set(Image.OPEN))
        if unknown:
            raise ValueError(
                f"unknown image formats {unknown}; Pillow's names include JPEG, PNG, WEBP, GIF, BMP, TIFF"
            )
        if not value:
            raise ValueError("at least one image format must be allowed")
        return value

    @field_serializer("allowed_formats")
    def _sorted_formats(self, value: frozenset[str]) -> list[str]:
        return sorted(value)

    @model_validator(mode="after")
    def _iam_needs_tls(self) -> Settings:
        # kafka-python only finds this out when the first connection is made, long after start-up.
        if self.kafka_sasl_mechanism == "AWS_MSK_IAM" and self.kafka_security_protocol != "SASL_SSL":
            raise ValueError("kafka_sasl_mechanism AWS_MSK_IAM needs kafka_security_protocol SASL_SSL")
        return self

    def policy_pack_path(self) -> Path:
        """The pack file: a relative path is looked up in the current folder, then in the checkout the
        package runs from (so a development install works from any folder)."""
        if self.policy_pack.is_absolute() or self.policy_pack.exists():
            return self.policy_pack
        checkout = Path(__file__).resolve().parent.parent / self.policy_pack
        return checkout if checkout.exists() else self.policy_pack

    def kafka_common(self) -> dict[str, object]:
        """Connection settings shared by the consumer, the producer and the admin client."""
        common: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
            "client_id": f"moderation-worker-{self.worker_id}",
            "bootstrap_timeout_ms": int(self.kafka_bootstrap_timeout_s * 1000),
        }
        if self.kafka_sasl_mechanism == "AWS_MSK_IAM":
            common["sasl_mechanism"] = self.kafka_sasl_mechanism
        elif self.kafka_sasl_mechanism:
            common["sasl_mechanism"] = self.kafka_sasl_mechanism
            common["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                common["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            common["ssl_cafile"] = self.kafka_ssl_cafile
        return common


def unknown_variables(
    environ: Mapping[str, str], *, also_known: Iterable[str] = ()
) -> list[tuple[str, str | None]]:
    """``MODERATION_*`` variables no setting reads, each with the closest known name (or None).

    pydantic-settings ignores them silently, so a misspelt ``MODERATION_S3_SECRET`` would leave the
    worker on its default credentials without a word. Names compare case-insensitively, as the
    settings read them. Only names are returned, never values (they may be secrets). ``also_known``:
    the full variable names other commands read (the review console's ``MODERATION_REVIEW_*``).
    """
    known = sorted(
        [name.upper() for name in Settings.model_fields]
        + [name.upper().removeprefix(ENV_PREFIX) for name in also_known]
    )
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        bare = upper.removeprefix(ENV_PREFIX)
        if not upper.startswith(ENV_PREFIX) or bare in known or upper.startswith(FOREIGN_PREFIXES):
            continue
        unknown.append((name, _closest(bare, known)))
    return unknown


def _closest(bare: str, known: list[str]) -> str | None:
    # A truncated name (S3_SECRET for S3_SECRET_ACCESS_KEY) first, then the most similar spelling;
    # compared without the common prefix, which would make every name look alike.
    longer = [name for name in known if name.startswith(bare)]
    closest = sorted(longer, key=len)[:1] or difflib.get_close_matches(bare, known, n=1, cutoff=0.6)
    return ENV_PREFIX + closest[0] if closest else None
