"""What the labels say: the export that threshold tuning reads, and the per-policy figures the
console shows. The figures come from ``moderation_worker.quality``, which the eval command uses too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation_worker import quality
from moderation_worker.review.models import Decision, Item, ItemPolicy, Label


def export_jsonl(session: Session, *, batch: int = 1000) -> Iterator[str]:
    """Every label, oldest first: sha256, image URL, policy, score, threshold, label, moderator, time,
    pack and model, one JSON object per line."""
    last = 0
    while True:
        rows = list(session.scalars(select(Label).where(Label.id > last).order_by(Label.id).limit(batch)))
        if not rows:
            return
        for row in rows:
            yield (
                json.dumps(
                    {
                        "sha256": row.sha256,
                        "image_url": row.image_url,
                        "policy": row.policy_id,
                        "score": row.score,
                        "confidence": row.confidence,
                        "threshold": row.threshold,
                        "label": row.label,
                        "explicit": row.explicit,
                        "moderator": row.moderator,
                        "decided_at": row.decided_at.isoformat(),
                        "policy_pack": row.pack,
                        "model": row.model,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        last = rows[-1].id


@dataclass(frozen=True)
class PolicyFigures:
    policy: str
    labels: int  # labelled decisions of this policy
    positives: int
    items_decided: int  # decided items on which this policy triggered
    overturned: int  # ... of which the moderator overturned the model
    threshold: float | None  # the threshold in the verdicts labelled (the latest)
    at_threshold: quality.AtThreshold | None
    suggested_threshold: float | None  # reaching the target precision
    target_precision: float

    @property
    def overturn_rate(self) -> float | None:
        return self.overturned / self.items_decided if self.items_decided else None


def figures(session: Session, policy: str, *, target_precision: float = 0.9) -> PolicyFigures:
    rows = session.execute(
        select(Label.confidence, Label.label, Label.threshold)
        .where(Label.policy_id == policy)
        .order_by(Label.id)
    ).all()
    scored = [(c, y) for c, y, _ in rows if c is not None]
    threshold = next((t for _, _, t in reversed(rows) if t is not None), None)
    confidences, labels = [c for c, _ in scored], [y for _, y in scored]
    decided = (
        select(func.count(Item.id.distinct()))
        .join(ItemPolicy, ItemPolicy.item_id == Item.id)
        .where(ItemPolicy.policy_id == policy, Item.status == "decided")
    )
    overturned = (
        select(func.count(Decision.id.distinct()))
        .join(ItemPolicy, ItemPolicy.item_id == Decision.item_id)
        .where(ItemPolicy.policy_id == policy, Decision.action == "overturn")
    )
    return PolicyFigures(
        policy=policy,
        labels=len(rows),
        positives=sum(1 for _, y, _ in rows if y),
        items_decided=session.scalar(decided) or 0,
        overturned=session.scalar(overturned) or 0,
        threshold=threshold,
        at_threshold=quality.at_threshold(confidences, labels, threshold)
        if scored and threshold is not None
        else None,
        suggested_threshold=quality.threshold_for_precision(confidences, labels, target_precision)
        if scored
        else None,
        target_precision=target_precision,
    )
