"""The console's own settings, ``MODERATION_REVIEW_*``; Kafka, S3 and topic names come from the
worker's settings (``MODERATION_*``), so the console and the workers read one configuration."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REVIEW_ENV_PREFIX = "MODERATION_REVIEW_"


class ReviewSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=REVIEW_ENV_PREFIX, frozen=True, extra="forbid", env_parse_none_str="none"
    )

    database_url: str = Field(
        "sqlite:///review.db",
        description="SQLAlchemy URL: sqlite:///path (embedded, WAL) or postgresql+psycopg://user@host/db.",
    )
    host: str = Field("127.0.0.1", description="Address the console binds.")
    port: int = Field(
        8090, ge=0, le=65535, description="Port of the console (pages, /livez, /readyz, /metrics)."
    )
    group_id: str = Field("moderation-review", description="Consumer group of the console's ingester.")
    decisions_topic: str = Field(
        "moderation.decisions", description="Moderators' decisions are published here."
    )
    sample_rate: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Share of allow verdicts from the results topic put in the sample queue.",
    )
    lease_s: float = Field(600.0, gt=0, description="How long a claim holds an item without renewal.")
    session_ttl_s: float = Field(43_200.0, gt=0, description="A login lasts this long without use.")
    cookie_secure: bool | None = Field(
        None, description="Session cookie Secure flag; None: set when the request came over HTTPS."
    )
    trusted_proxy_header: str | None = Field(
        None, description="A header naming the user, set by an authenticating proxy (e.g. X-Forwarded-User)."
    )
    # NoDecode: the environment gives "10.0.0.0/8,127.0.0.1", not JSON.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Comma-separated addresses or networks the proxy header is accepted from."
    )
    login_max_failures: int = Field(5, ge=1, description="Failed logins per user and address in the window.")
    login_window_s: float = Field(900.0, gt=0, description="Window of the login rate limit.")
    outbox_interval_s: float = Field(
        1.0, gt=0, description="How often the outbox publisher looks for unsent rows."
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for part in value:
            ip_network(part, strict=False)  # ValueError names the bad entry
        return value
