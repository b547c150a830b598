"""The small interface the pipeline scores through; it never imports transformers itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ModelInfo:
    """What produced a score; echoed in every verdict and part of every cache key."""

    model_id: str
    revision: str
    dtype: str
    device: str
    # How scores are computed (hf: shared_prefix, reused_features or plain). Equal scores either way, so
    # it is reported, not part of the cache key.
    strategy: str = "unknown"

    @property
    def cache_key(self) -> str:
        # Scores and vision features differ across weights and dtype, not across devices of one kind.
        return f"{self.model_id}@{self.revision}:{self.dtype}"


@dataclass(frozen=True)
class ScoringRequest:
    """One image to score against several policy prompts.

    ``image`` is RGB and already resized by the image stage. ``image_key`` identifies the pixels
    (sha256 of the fetched bytes plus the preprocessing); scorers key their vision-feature cache on it.
    ``preamble`` is text placed before the image, the same for every prompt (a compact pack's
    catalogue of rules); each prompt follows the image.
    """

    image: Image.Image
    image_key: str
    prompts: Sequence[str]
    preamble: str = ""


@dataclass(frozen=True)
class ImageScores:
    """P("Yes") per prompt, in the order of the request's prompts."""

    yes_probabilities: list[float]
    feature_cache_hit: bool = False


@runtime_checkable
class Scorer(Protocol):
    """Scores a batch of images, each against its own list of prompts."""

    @property
    def info(self) -> ModelInfo: ...

    def score(self, requests: Sequence[ScoringRequest]) -> list[ImageScores]: ...
