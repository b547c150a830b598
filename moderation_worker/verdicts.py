"""A verdict from scores: calibration, thresholds, the decision, and the result record published.

One function, so the worker, the HTTP API and anything else that scores images build the same record
from the same scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    SourceValue,
    WorkerInfo,
    decide,
)
from moderation_worker.policies import Policy

if TYPE_CHECKING:
    from moderation_worker.jobs import ImageFacts


# A specialist's signal as the verdict carries it: its value and its (masked) evidence.
SignalValues = Mapping[str, tuple[float, tuple[str, ...]]]


def policy_verdict(policy: Policy, score: float, signals: SignalValues | None = None) -> PolicyVerdict:
    """The policy's verdict from the VLM's score and, for each of the policy's signal rules, the
    specialist's value (``combine: max``: the confidence is the highest source)."""
    sources = [SourceValue(source="vlm", value=policy.calibration.apply(score))]
    for rule in policy.signals:
        if signals is None or rule.source not in signals:
            # Never a silent zero: the pipeline runs every specialist the selected policies need.
            raise RuntimeError(f"policy {policy.id!r} combines {rule.source}, which was not computed")
        value, evidence = signals[rule.source]
        sources.append(SourceValue(source=rule.source, value=value, evidence=list(evidence)))
    confidence = max(source.value for source in sources)
    return PolicyVerdict(
        id=policy.id,
        version=policy.version,
        score=score,
        confidence=confidence,
        sources=sources,
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
    signals: SignalValues | None = None,
) -> ModerationResult:
    verdicts = [policy_verdict(policy, score, signals) for policy, score in scored]
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
