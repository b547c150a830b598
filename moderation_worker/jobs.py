"""What a record carries through the pipeline's stages, and the batch handed from prepare to finish."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from moderation_worker.errors import ModerationError
from moderation_worker.events import HashMatchInfo, ModerationRequest
from moderation_worker.images import DecodedImage
from moderation_worker.outcomes import InboundRecord
from moderation_worker.policies import Policy


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_edge: int
    allowed_formats: frozenset[str]


@dataclass(frozen=True)
class ImageFacts:
    """What a verdict says about its image; known after one decode, so a repeat need not decode."""

    sha256: str
    width: int
    height: int
    format: str
    byte_size: int

    @classmethod
    def of(cls, image: DecodedImage) -> ImageFacts:
        return cls(image.sha256, image.width, image.height, image.format, image.byte_size)


@dataclass(frozen=True)
class CachedVerdict:
    """A verdict-cache entry: the scores of every policy scored on one image so far, and its facts."""

    scores: dict[str, float]
    image: ImageFacts
    # The specialists' signals of the image (those computed so far), by source name.
    signals: dict[str, tuple[float, tuple[str, ...]]] = field(default_factory=dict)


@dataclass
class _Job:
    """One record's state as it moves through the stages."""

    record: InboundRecord
    started: float
    event_id: str | None = None
    request: ModerationRequest | None = None
    policies: list[Policy] = field(default_factory=list)
    image: DecodedImage | None = None  # None on a verdict-cache hit found before decoding
    facts: ImageFacts | None = None
    cache_key: str | None = None  # the image's, from its bytes' digest and the preprocessing
    error: ModerationError | None = None
    scores: dict[str, float] = field(default_factory=dict)
    signals: dict[str, tuple[float, tuple[str, ...]]] = field(default_factory=dict)
    matched: HashMatchInfo | None = None  # on a known-bad list: blocked, the model skipped
    ocr_text: str | None = None  # what OCR read (masked), for policies whose prompt asks for it
    verdict_hit: bool = False
    feature_hit: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.error is None

    @property
    def image_key(self) -> str:
        assert self.cache_key is not None
        return self.cache_key


@dataclass(frozen=True)
class PreparedBatch:
    """A batch after ``prepare``: each record parsed, its image fetched and decoded (or its error
    noted), in input order. The hand-off from the thread that prepares to the one that finishes."""

    jobs: tuple[_Job, ...]

    @property
    def records(self) -> list[InboundRecord]:
        return [job.record for job in self.jobs]

    def keeping(self, keep: Callable[[InboundRecord], bool]) -> PreparedBatch:
        """The batch less the records ``keep`` refuses (the worker's: partitions rewound or revoked
        while the batch waited); the others are finished exactly as they would have been."""
        return PreparedBatch(tuple(job for job in self.jobs if keep(job.record)))
