"""The API's own settings, ``MODERATION_API_*``; S3, the model, the pack and the caches come from the
worker's settings (``MODERATION_*``), so ``serve`` loads everything exactly as ``run`` does."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

API_ENV_PREFIX = "MODERATION_API_"


def _split(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=API_ENV_PREFIX, frozen=True, extra="forbid", env_parse_none_str="none"
    )

    host: str = Field("127.0.0.1", description="Address the API binds (0.0.0.0 in a container).")
    port: int = Field(
        8000, ge=0, le=65535, description="Port of the API, its page, /livez, /readyz and /metrics."
    )
    # NoDecode: the environment gives comma-separated lists, not JSON.
    keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="API keys as name:sha256-hex entries (moderation-worker serve --new-key makes one)."
    )
    allow_anonymous: bool = Field(
        False,
        description="Without keys, answer any client; off: without keys only loopback clients are answered.",
    )
    rate_per_key: float = Field(
        0.0, ge=0, description="Requests per second per key (bursts of twice that); 0: off."
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Largest request body (data: URLs are large); refused before it is read.",
    )
    max_batch: int = Field(16, ge=1, le=256, description="Most images one scoring call holds.")
    max_wait_ms: float = Field(
        10.0, ge=0, description="How long the batcher waits for more requests to join a call."
    )
    queue_max_requests: int = Field(
        64, ge=1, description="Requests waiting for the model, at most; beyond: 429."
    )
    queue_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Decoded image bytes waiting for the model, at most; beyond: 429.",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="A request waiting longer for its answer gets 504."
    )
    prepare_concurrency: int = Field(8, ge=1, le=256, description="Requests fetched and decoded at once.")
    http_allow_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Hosts http(s) image URLs may name (.example.com: it and its subdomains); empty: none.",
    )
    http_allow_loopback: bool = Field(
        False, description="Let allowlisted hosts resolve to loopback (tests and local development only)."
    )
    publish_flagged: bool = Field(False, description="Also publish flagged API verdicts to the review topic.")

    _split_keys = field_validator("keys", "http_allow_hosts", mode="before")(
        classmethod(lambda cls, v: _split(v))
    )

    @field_validator("keys")
    @classmethod
    def _keys_are_hashes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            name, _, digest = entry.partition(":")
            if not name or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    f"an API key entry is name:sha256-hex (64 lowercase hex digits), not {entry[:20]!r}..."
                )
        return value
