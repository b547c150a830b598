"""``eval --fit``: Platt calibration per policy and a threshold for a target precision or recall,
written as a new pack version beside the old one (never over it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from moderation_worker import quality
from moderation_worker.evaluation.scoring import Observation
from moderation_worker.policies import Calibration, PolicyPack


@dataclass(frozen=True)
class Change:
    policy: str
    calibration: tuple[Calibration, Calibration]  # before, after
    threshold: tuple[float, float]
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.calibration[0] != self.calibration[1] or self.threshold[0] != self.threshold[1]


def fit_pack(
    observations: Sequence[Observation],
    pack: PolicyPack,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
) -> tuple[PolicyPack, list[Change]]:
    """The pack with each labelled policy's calibration fitted on the VLM's raw scores and its
    threshold moved to reach the target on the new confidence (the highest of the recalibrated VLM
    and the policy's specialist signals, as verdicts compute it). Policies whose labels are all one
    class, or whose scores do not rise with the label, are left as they are, with the reason."""
    policies, changes = [], []
    for policy in pack.policies:
        # Calibration is of the VLM's score: only where the VLM was asked.
        mine = [o for o in observations if o.policy == policy.id and o.score is not None]
        if not mine:
            policies.append(policy)
            continue
        fitted = quality.fit_platt([o.score for o in mine], [o.label for o in mine])
        if fitted is None or fitted[0] <= 0:
            note = "labels of one class only" if fitted is None else "scores do not rise with the label"
            changes.append(Change(policy.id, (policy.calibration,) * 2, (policy.threshold,) * 2, note))
            policies.append(policy)
            continue
        calibration = Calibration(scale=round(fitted[0], 6), bias=round(fitted[1], 6))
        confidences = [
            max([calibration.apply(o.score)] + [v for k, v in o.sources.items() if k != "vlm"]) for o in mine
        ]
        labels = [o.label for o in mine]
        threshold, note = policy.threshold, ""
        if target_precision is not None:
            found = quality.threshold_for_precision(confidences, labels, target_precision)
            note = "" if found is not None else f"no threshold reaches precision {target_precision:g}"
            threshold = round(found, 6) if found is not None else threshold
        elif target_recall is not None:
            found = quality.threshold_for_recall(confidences, labels, target_recall)
            note = "" if found is not None else f"no threshold reaches recall {target_recall:g}"
            threshold = round(found, 6) if found is not None else threshold
        change = Change(policy.id, (policy.calibration, calibration), (policy.threshold, threshold), note)
        changes.append(change)
        policies.append(
            policy.model_copy(
                update={"calibration": calibration, "threshold": threshold, "version": policy.version + 1}
            )
            if change.changed
            else policy
        )
    fitted_pack = pack.model_copy(update={"policies": policies, "version": f"{pack.version}-fit"})
    return PolicyPack.model_validate(fitted_pack.model_dump()), changes


def write_beside(pack: PolicyPack, original: Path) -> Path:
    """``<name>.fit.yaml`` beside the original (``.fit-2.yaml`` and on if taken): never over a file."""
    candidate = original.with_name(f"{original.stem}.fit.yaml")
    number = 2
    while candidate.exists():
        candidate = original.with_name(f"{original.stem}.fit-{number}.yaml")
        number += 1
    document = pack.model_dump(mode="json", exclude_defaults=True)
    header = f"# Fitted by `moderation-worker eval --fit` from {original.name}; review before use.\n"
    candidate.write_text(
        header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return candidate


def describe(changes: Sequence[Change]) -> str:
    lines = []
    for change in changes:
        (before, after), (was, now) = change.calibration, change.threshold
        if change.changed:
            line = (
                f"{change.policy}: calibration scale {before.scale:g} -> {after.scale:g}, "
                f"bias {before.bias:g} -> {after.bias:g}; threshold {was:g} -> {now:g}"
            )
            lines.append(line + (f" ({change.note})" if change.note else ""))
        else:
            lines.append(f"{change.policy}: unchanged" + (f" ({change.note})" if change.note else ""))
    return "\n".join(lines)
