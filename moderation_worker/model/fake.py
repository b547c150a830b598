"""A deterministic scorer for tests and dry runs: no model, no GPU."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from moderation_worker.model.base import ImageScores, ModelInfo, ScoringRequest

ScoreRule = Callable[[ScoringRequest, str], float]


def _hash_score(request: ScoringRequest, prompt: str) -> float:
    # Stable across runs and processes (unlike hash()), so a reprocessed event gets the same verdict.
    digest = hashlib.sha256(f"{request.image_key}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FakeScorer:
    """Scores by a rule (by default a stable hash of image and prompt). Counts what it was asked."""

    def __init__(self, rule: ScoreRule = _hash_score, *, model_id: str = "fake-scorer") -> None:
        self._rule = rule
        self._info = ModelInfo(
            model_id=model_id, revision="none", dtype="none", device="cpu", strategy="fake"
        )
        self.calls: list[int] = []  # batch sizes, in order
        self.images_scored = 0

    @property
    def info(self) -> ModelInfo:
        return self._info

    def score(self, requests: Sequence[ScoringRequest]) -> list[ImageScores]:
        self.calls.append(len(requests))
        self.images_scored += len(requests)
        return [ImageScores([float(self._rule(r, p)) for p in r.prompts]) for r in requests]
