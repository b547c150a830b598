"""What the console's pages need, built once per process and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from moderation_worker.config import Settings
from moderation_worker.fetch import Fetcher
from moderation_worker.policies import PolicyPack
from moderation_worker.review.metrics import ConsoleMetrics
from moderation_worker.review.outbox import OutboxPublisher
from moderation_worker.review.settings import ReviewSettings


@dataclass
class ConsoleContext:
    settings: Settings  # Kafka, S3, topics: the worker's
    review: ReviewSettings
    engine: Engine
    sessions: sessionmaker[Session]
    pack: PolicyPack  # the rules shown beside each score, and the policies moderators can label
    fetcher: Fetcher  # the console's own S3 client, for item images
    metrics: ConsoleMetrics
    outbox: OutboxPublisher | None = None  # None: decisions wait in the outbox for a publisher elsewhere
    ingest_ok: dict[str, object] = field(default_factory=dict)  # set by the ingester thread, if any

    @property
    def known_policies(self) -> frozenset[str]:
        return frozenset(p.id for p in self.pack.policies)
