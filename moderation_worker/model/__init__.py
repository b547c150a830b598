"""The model stage: score images against policy prompts.

Importable without Kafka or S3 packages (GPU machines may lack them); only ``hf`` imports torch and
transformers, and only when it is used.
"""

from moderation_worker.model.base import ImageScores, ModelInfo, Scorer, ScoringRequest
from moderation_worker.model.fake import FakeScorer

__all__ = ["FakeScorer", "ImageScores", "ModelInfo", "Scorer", "ScoringRequest"]
