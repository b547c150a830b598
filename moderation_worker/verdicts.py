"""A verdict from scores: calibration, thresholds, the decision, and the result record published.

One function, so the worker, the HTTP API and anything else that scores images build the same record
from the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from moderation_worker.events import (
    CacheHits,
    ImageInfo,
    ModelDescription,
    ModerationRequest,
    ModerationResult,
    PolicyPackInfo,
    PolicyVerdict,
    WorkerInfo,
    decide,
)
from moderation_worker.policies import Policy

if TYPE_CHECKING:
    from moderation_worker.pipeline import ImageFacts


def policy_verdict(policy: Policy, score: float) -> PolicyVerdict:
    confidence = policy.calibration.apply(score)
    return PolicyVerdict(
        id=policy.id,
        version=policy.version,
        score=score,
        confidence=confidence,
        threshold=policy.threshold,
        triggered=confidence >= policy.threshold,
        action=policy.action,
        severity=policy.severity,
    )


def build_result(
    request: ModerationRequest,
    image: ImageFacts,
    scored: Sequence[tuple[Policy, float]],
    *,
    pack: PolicyPackInfo,
    model: ModelDescription,
    worker: WorkerInfo,
    cache: CacheHits,
    timings_ms: dict[str, float],
) -> ModerationResult:
    verdicts = [policy_verdict(policy, score) for policy, score in scored]
    return ModerationResult(
        event_id=request.event_id,
        content_id=request.content_id,
        tenant=request.tenant,
        source=request.source,
        submitted_at=request.submitted_at,
        metadata=request.metadata,
        decision=decide(verdicts),
        image=ImageInfo(
            url=request.image_url,
            sha256=image.sha256,
            width=image.width,
            height=image.height,
            format=image.format,
            byte_size=image.byte_size,
        ),
        policies=verdicts,
        policy_pack=pack,
        model=model,
        cache=cache,
        timings_ms={k: round(v, 3) for k, v in timings_ms.items()},
        worker=worker,
        processed_at=datetime.now(UTC),
    )
