"""How good verdicts are, measured on labels: one module for the review console's label pages and
the eval command, so both compute the same numbers the same way.

The metrics themselves come from scikit-learn (precision_recall_curve, roc_auc_score,
average_precision_score, LogisticRegression for Platt scaling); this module only shapes the inputs
and the answers. Scores are the calibrated confidences a verdict compares with its threshold; a
label is True when the policy applies to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AtThreshold:
    threshold: float
    precision: float | None  # None when nothing is at or above the threshold
    recall: float | None  # None when no label is positive
    f1: float | None
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int

    @property
    def support(self) -> int:
        return self.true_positives + self.false_positives + self.false_negatives + self.true_negatives


def _arrays(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    return np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)


def at_threshold(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> AtThreshold:
    s, y = _arrays(scores, labels)
    flagged = s >= threshold
    tp, fp = int(np.sum(flagged & y)), int(np.sum(flagged & ~y))
    fn, tn = int(np.sum(~flagged & y)), int(np.sum(~flagged & ~y))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else None
    )
    return AtThreshold(threshold, precision, recall, f1, tp, fp, fn, tn)


def threshold_for_precision(scores: Sequence[float], labels: Sequence[bool], target: float) -> float | None:
    """The lowest threshold whose precision reaches ``target`` (so recall is as high as it can be)."""
    from sklearn.metrics import precision_recall_curve

    s, y = _arrays(scores, labels)
    if not y.any() or y.all():
        return None
    precision, _recall, thresholds = precision_recall_curve(y, s)
    reaching = [t for p, t in zip(precision[:-1], thresholds, strict=True) if p >= target]
    return float(min(reaching)) if reaching else None


def threshold_for_recall(scores: Sequence[float], labels: Sequence[bool], target: float) -> float | None:
    """The highest threshold whose recall still reaches ``target`` (so precision is as high as it can)."""
    from sklearn.metrics import precision_recall_curve

    s, y = _arrays(scores, labels)
    if not y.any() or y.all():
        return None
    _precision, recall, thresholds = precision_recall_curve(y, s)
    reaching = [t for r, t in zip(recall[:-1], thresholds, strict=True) if r >= target]
    return float(max(reaching)) if reaching else None


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    from sklearn.metrics import roc_auc_score

    s, y = _arrays(scores, labels)
    return float(roc_auc_score(y, s)) if y.any() and not y.all() else None


def pr_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Average precision (the step-wise area under the precision-recall curve)."""
    from sklearn.metrics import average_precision_score

    s, y = _arrays(scores, labels)
    return float(average_precision_score(y, s)) if y.any() else None


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    mean_confidence: float | None
    positive_rate: float | None


def reliability(scores: Sequence[float], labels: Sequence[bool], *, bins: int = 10) -> list[ReliabilityBin]:
    s, y = _arrays(scores, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(s, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        out.append(
            ReliabilityBin(
                float(edges[b]),
                float(edges[b + 1]),
                count,
                float(s[members].mean()) if count else None,
                float(y[members].mean()) if count else None,
            )
        )
    return out


def expected_calibration_error(
    scores: Sequence[float], labels: Sequence[bool], *, bins: int = 10
) -> float | None:
    """Sum over equal-width bins of |mean confidence - positive rate|, weighted by the bin's share."""
    total = len(scores)
    if total == 0:
        return None
    return float(
        sum(
            b.count / total * abs(b.mean_confidence - b.positive_rate)
            for b in reliability(scores, labels, bins=bins)
            if b.count
        )
    )


def fit_platt(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float] | None:
    """Platt scaling of raw scores: (scale, bias) with confidence = sigmoid(scale * logit(score) + bias).

    A logistic regression of the label on logit(score), unregularised; None when only one class is
    labelled (nothing to fit)."""
    from sklearn.linear_model import LogisticRegression

    s, y = _arrays(scores, labels)
    if not y.any() or y.all():
        return None
    eps = 1e-6
    clipped = np.clip(s, eps, 1 - eps)
    logits = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    model = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)  # C this large: no regularisation
    model.fit(logits, y)
    return float(model.coef_[0][0]), float(model.intercept_[0])
