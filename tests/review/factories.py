"""Verdicts as the worker publishes them (real ``ModerationResult`` records), for the console's tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from moderation_worker.config import Settings
from moderation_worker.events import (
    CacheHits,
    Decision,
    ImageInfo,
    ModelDescription,
    ModerationResult,
    PolicyPackInfo,
    PolicyVerdict,
    WorkerInfo,
)
from moderation_worker.policies import load_policy_pack
from moderation_worker.review.ingest import IncomingRecord

PACK = load_policy_pack(Settings().policy_pack_path())


def verdict(
    event_id: str,
    *,
    tenant: str | None = "t1",
    content_id: str | None = None,
    image: bytes = b"image-bytes",
    triggered: dict[str, float] | None = None,
    metadata: dict | None = None,
    image_url: str | None = None,
    size: tuple[int, int] = (64, 48),
) -> ModerationResult:
    """A verdict over the default pack: ``triggered`` maps policy id to a confidence above its
    threshold; every other policy scores 0.05."""
    triggered = triggered or {}
    policies = []
    for policy in PACK.policies:
        confidence = triggered.get(policy.id, 0.05)
        policies.append(
            PolicyVerdict(
                id=policy.id,
                version=policy.version,
                score=confidence,
                confidence=confidence,
                threshold=policy.threshold,
                triggered=confidence >= policy.threshold,
                action=policy.action,
                severity=policy.severity,
            )
        )
    actions = {p.action.value for p in policies if p.triggered}
    decision = Decision.BLOCK if "block" in actions else Decision.REVIEW if actions else Decision.ALLOW
    sha = hashlib.sha256(image).hexdigest()
    return ModerationResult(
        event_id=event_id,
        content_id=content_id,
        tenant=tenant,
        source="tests",
        submitted_at=None,
        metadata=metadata or {},
        decision=decision,
        image=ImageInfo(
            url=image_url or f"s3://b/{sha[:8]}.png",
            sha256=sha,
            width=size[0],
            height=size[1],
            format="PNG",
            byte_size=len(image),
        ),
        policies=policies,
        policy_pack=PolicyPackInfo(name=PACK.name, version=PACK.version, hash=PACK.content_hash),
        model=ModelDescription(id="m", revision="r", dtype="float32", device="cpu", strategy="shared_prefix"),
        cache=CacheHits(verdict=False, feature=False),
        timings_ms={"total": 1.0},
        worker=WorkerInfo(id="w", version="0"),
        processed_at=datetime.now(UTC),
    )


def record(
    result: ModerationResult | bytes, *, kind: str = "flagged", offset: int = 0, key: bytes | None = b"k"
) -> IncomingRecord:
    value = result if isinstance(result, bytes) else result.to_json_bytes()
    topic = "moderation.review" if kind == "flagged" else "moderation.results"
    return IncomingRecord(topic=topic, partition=0, offset=offset, key=key, value=value, kind=kind)
