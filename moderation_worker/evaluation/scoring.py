"""Score labelled examples through the production pipeline: one event per distinct image, asking for
the policies it is labelled for, in batches, exactly as the worker scores records."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from moderation_worker.evaluation.labels import Example
from moderation_worker.outcomes import InboundRecord, OutcomeKind
from moderation_worker.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class Observation:
    """One labelled example scored: the VLM's raw score (None when a specialist decided the policy
    alone), each source's value, the combined confidence."""

    policy: str
    label: bool
    score: float | None
    sources: dict[str, float]
    confidence: float


@dataclass
class Scored:
    observations: list[Observation] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image, error code: why it has no verdict)


def score_examples(
    pipeline: Pipeline,
    examples: Sequence[Example],
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Scored:
    by_image: dict[str, dict[str, bool]] = {}
    for example in examples:
        by_image.setdefault(example.image, {})[example.policy] = example.label
    images = list(by_image)
    scored = Scored()
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        records = [
            InboundRecord(topic="eval", partition=0, offset=start + n, key=None, value=json.dumps(
                {"event_id": f"eval-{start + n}", "image_url": image, "policies": sorted(by_image[image])}
            ).encode())
            for n, image in enumerate(chunk)
        ]  # fmt: skip
        for image, outcome in zip(chunk, pipeline.process(records), strict=True):
            if outcome.kind is not OutcomeKind.RESULT or outcome.result is None:
                scored.failed.append((image, outcome.error_code or outcome.kind.value))
                continue
            for verdict in outcome.result.policies:
                if verdict.confidence is None or verdict.id not in by_image[image]:
                    continue  # not scored (a known-bad image): nothing to measure
                scored.observations.append(
                    Observation(
                        policy=verdict.id,
                        label=by_image[image][verdict.id],
                        score=verdict.score,
                        sources={s.source: s.value for s in verdict.sources},
                        confidence=verdict.confidence,
                    )
                )
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    return scored
