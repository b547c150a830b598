"""The metrics the console and the eval command share, on sets small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moderation_worker import quality

# Six examples: scores and labels. At threshold 0.5: flagged 0.9 (pos), 0.8 (neg), 0.6 (pos);
# not flagged 0.4 (pos), 0.2 (neg), 0.1 (neg). TP 2, FP 1, FN 1, TN 2.
SCORES = [0.9, 0.8, 0.6, 0.4, 0.2, 0.1]
LABELS = [True, False, True, True, False, False]


def test_precision_recall_f1_at_a_threshold():
    at = quality.at_threshold(SCORES, LABELS, 0.5)
    assert (at.true_positives, at.false_positives, at.false_negatives, at.true_negatives) == (2, 1, 1, 2)
    assert at.precision == pytest.approx(2 / 3) and at.recall == pytest.approx(2 / 3)
    assert at.f1 == pytest.approx(2 / 3)
    nothing = quality.at_threshold(SCORES, LABELS, 0.95)
    assert nothing.precision is None and nothing.recall == 0.0


def test_roc_auc_and_average_precision():
    # Pairs (positive, negative) ordered right: of 9, the positive 0.4 is below the negative 0.8,
    # and the positive 0.6 too: 7 of 9.
    assert quality.roc_auc(SCORES, LABELS) == pytest.approx(7 / 9)
    # Average precision: positives at ranks 1, 3, 4 -> (1/1 + 2/3 + 3/4) / 3.
    assert quality.pr_auc(SCORES, LABELS) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert quality.roc_auc([0.1, 0.2], [True, True]) is None  # one class: undefined, not a number


def test_expected_calibration_error_by_hand():
    # Two examples in two of the ten bins: 0.15 (negative) in [0.1, 0.2), 0.85 (positive) in [0.8, 0.9).
    scores, labels = [0.15, 0.85], [False, True]
    # |0.15 - 0| / 2 + |0.85 - 1| / 2 = 0.15
    assert quality.expected_calibration_error(scores, labels) == pytest.approx(0.15)


def test_thresholds_for_a_target_precision_and_recall():
    assert quality.threshold_for_precision(SCORES, LABELS, 1.0) == pytest.approx(0.9)
    assert quality.threshold_for_recall(SCORES, LABELS, 1.0) == pytest.approx(0.4)


def test_platt_fitting_recovers_known_coefficients():
    rng = np.random.default_rng(7)
    scale, bias = 2.0, -0.5
    logits = rng.normal(0.0, 1.5, 20_000)
    scores = 1 / (1 + np.exp(-logits))
    truth = 1 / (1 + np.exp(-(scale * logits + bias)))
    labels = rng.random(logits.size) < truth
    fitted_scale, fitted_bias = quality.fit_platt(scores.tolist(), labels.tolist())
    assert fitted_scale == pytest.approx(scale, abs=0.1) and fitted_bias == pytest.approx(bias, abs=0.1)
    assert quality.fit_platt([0.2, 0.7], [True, True]) is None
    assert not math.isnan(fitted_scale)
