"""The specialists as a pipeline stage: built from what the pack needs, run in the prepare stage.

Built at start-up from the specialists the pack's signal rules name, so a pack that needs one that is
not installed stops the worker before it takes a record (SpecialistUnavailable, exit 2): a rule must
never change with what happens to be installed. Per image, only the specialists the selected policies
need run, at most ``concurrency`` at a time: OCR takes hundreds of milliseconds of CPU, and the
prepare stage must never starve the scoring loop of the cores it shares with it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from moderation_worker.config import Settings
from moderation_worker.errors import ConfigurationError
from moderation_worker.events import HashMatchInfo
from moderation_worker.policies import PolicyPack
from moderation_worker.specialists.base import Specialist

if TYPE_CHECKING:
    from moderation_worker.specialists.hash_match import HashMatchSpecialist

# Signals keyed by source name ("ocr.personal_data"): (value, masked evidence).
Signals = dict[str, tuple[float, tuple[str, ...]]]

# OCR reads small print: it gets the image at up to this edge, more than most VLMs' input.
OCR_EDGE = 960


@dataclass(frozen=True)
class StageResult:
    signals: Signals
    elapsed_ms: float
    ocr_text: str | None = None


def build_specialist(name: str, *, threads: int = 1) -> Specialist:
    """One specialist by name (the names a pack's signal rules use)."""
    if name == "ocr":
        from moderation_worker.specialists.ocr import OcrSpecialist

        return OcrSpecialist(threads=threads)
    if name == "nudity":
        from moderation_worker.specialists.nudity import NuditySpecialist

        return NuditySpecialist(threads=threads)
    raise ValueError(f"unknown specialist {name!r}")


class SpecialistStage:
    def __init__(
        self,
        specialists: dict[str, Specialist],
        *,
        concurrency: int = 1,
        matcher: HashMatchSpecialist | None = None,
    ) -> None:
        self._specialists = specialists
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self.matcher = matcher

    @property
    def version(self) -> str:
        """Part of every verdict-cache key: another specialist version, or another hash list in
        force, never serves an old verdict (read anew each time: a list reload changes it)."""
        parts = [f"{name}={s.version}" for name, s in sorted(self._specialists.items())]
        if self.matcher is not None:
            parts.append(f"hash_match={self.matcher.version}")
        return ",".join(parts)

    def specialist(self, name: str) -> Specialist:
        return self._specialists[name]

    @classmethod
    def for_pack(
        cls,
        pack: PolicyPack,
        *,
        concurrency: int = 1,
        hash_list: Path | None = None,
        hash_max_distance: int = 31,
        hash_min_quality: int = 50,
    ) -> SpecialistStage | None:
        """The stage the pack and the settings need (None when neither names a specialist);
        SpecialistUnavailable if one is not installed, HashListError if the list does not parse."""
        names = pack.specialists()
        matcher = None
        if hash_list is not None:
            from moderation_worker.specialists.hash_match import (
                HashListError,
                HashListFile,
                HashMatchSpecialist,
            )

            known = frozenset(p.id for p in pack.policies)
            try:
                hashes = HashListFile(hash_list, known_policies=known)
            except (OSError, HashListError) as exc:
                # At start nothing is in force yet: a list that cannot be read stops the worker.
                raise ConfigurationError(f"hash list {hash_list}: {exc}") from exc
            matcher = HashMatchSpecialist(
                hashes, max_distance=hash_max_distance, min_quality=hash_min_quality
            )
        if not names and matcher is None:
            return None
        specialists = {name: build_specialist(name) for name in sorted(names)}
        return cls(specialists, concurrency=concurrency, matcher=matcher)

    @classmethod
    def from_settings(cls, pack: PolicyPack, settings: Settings) -> SpecialistStage | None:
        return cls.for_pack(
            pack,
            concurrency=settings.specialists_concurrency,
            hash_list=settings.hash_list_path,
            hash_max_distance=settings.hash_max_distance,
            hash_min_quality=settings.hash_min_quality,
        )

    def match(self, image: Image.Image) -> HashMatchInfo | None:
        """The known-bad list entry the image matches, if a list is configured and it does."""
        if self.matcher is None:
            return None
        found = self.matcher.match(image)
        if found is None:
            return None
        return HashMatchInfo(list=found.list, list_version=found.list_version, label=found.label,
                             source=found.source, policy=found.policy, distance=found.distance)  # fmt: skip

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._specialists)

    def analyse(self, images: dict[str, Image.Image], needed: frozenset[str]) -> StageResult:
        """Run the ``needed`` specialists; ``images`` by use: "ocr" (up to OCR_EDGE) and "model"."""
        started = time.perf_counter()
        signals: Signals = {}
        ocr_text = None
        for name in sorted(needed):
            image = images["ocr"] if name == "ocr" else images["model"]
            with self._slots:
                analysis = self._specialists[name].analyse(image)
            for signal in analysis.signals:
                signals[f"{name}.{signal.name}"] = (signal.value, signal.evidence)
            if name == "ocr":
                ocr_text = str(analysis.details.get("text", ""))
        return StageResult(signals, (time.perf_counter() - started) * 1000, ocr_text)
