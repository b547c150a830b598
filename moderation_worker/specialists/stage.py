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
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from moderation_worker.policies import Policy, PolicyPack
from moderation_worker.specialists.base import Specialist

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
    def __init__(self, specialists: dict[str, Specialist], *, concurrency: int = 1) -> None:
        self._specialists = specialists
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        # Part of every verdict-cache key: another specialist version never serves an old verdict.
        self.version = ",".join(f"{name}={s.version}" for name, s in sorted(specialists.items()))

    @classmethod
    def for_pack(cls, pack: PolicyPack, *, concurrency: int = 1) -> SpecialistStage | None:
        """The stage the pack needs (None when it names no specialist); SpecialistUnavailable if one
        is not installed."""
        names = pack.specialists()
        if not names:
            return None
        return cls({name: build_specialist(name) for name in sorted(names)}, concurrency=concurrency)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._specialists)

    def needs(self, policies: Sequence[Policy]) -> frozenset[str]:
        return frozenset(rule.specialist for p in policies for rule in p.signals)

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
