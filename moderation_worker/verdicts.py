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
    Decision,
    HashMatchInfo,
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


def decided_by_signal(policy: Policy, signals: SignalValues | None) -> tuple[str, float] | None:
    """(source, value) of a signal at or above its rule's ``decide_above``: the policy is decided by it
    alone, and the VLM need not be asked."""
    for rule in policy.signals:
        if rule.decide_above is not None and signals and rule.source in signals:
            value = signals[rule.source][0]
            if value >= rule.decide_above:
                return rule.source, value
    return None


def policy_verdict(policy: Policy, score: float | None, signals: SignalValues | None = None) -> PolicyVerdict:
    """The policy's verdict from the VLM's score and, for each of the policy's signal rules, the
    specialist's value (``combine: max``: the confidence is the highest source). ``score`` is None
    when a signal decided the policy alone (the VLM was not asked): its sources are that signal."""
    if score is None:
        decided = decided_by_signal(policy, signals)
        if decided is None:
            raise RuntimeError(f"policy {policy.id!r} has neither a score nor a deciding signal")
        source, value = decided
        return PolicyVerdict(
            id=policy.id, version=policy.version, score=None, confidence=value,
            sources=[SourceValue(source=source, value=value, evidence=list(signals[source][1]))],
            threshold=policy.threshold, triggered=value >= policy.threshold, action=policy.action,
            severity=policy.severity,
        )  # fmt: skip
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


def hash_matched_verdicts(policies: Sequence[Policy], matched: HashMatchInfo) -> list[PolicyVerdict]:
    """An image on a known-bad list: the entry's policy triggered by the match alone, every other
    policy unscored (the model did not run), never an invented zero."""
    verdicts = []
    evidence = [f"{matched.label} ({matched.list})"]
    for policy in policies:
        hit = policy.id == matched.policy
        verdicts.append(
            PolicyVerdict(
                id=policy.id,
                version=policy.version,
                score=None,
                confidence=1.0 if hit else None,
                sources=[SourceValue(source="hash_match", value=1.0, evidence=evidence)] if hit else [],
                threshold=policy.threshold,
                triggered=hit,
                skipped_by=None if hit else "hash_match",
                action=policy.action,
                severity=policy.severity,
            )
        )
    return verdicts


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
    matched: HashMatchInfo | None = None,
) -> ModerationResult:
    if matched is None:
        verdicts = [policy_verdict(policy, score, signals) for policy, score in scored]
        decision = decide(verdicts)
    else:
        verdicts = hash_matched_verdicts([policy for policy, _ in scored], matched)
        decision = Decision.BLOCK  # a known-bad image is blocked whatever its policy's action
    return ModerationResult(
        event_id=request.event_id,
        content_id=request.content_id,
        tenant=request.tenant,
        source=request.source,
        submitted_at=request.submitted_at,
        metadata=request.metadata,
        decision=decision,
        matched=matched,
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
