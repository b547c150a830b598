"""OCR with RapidOCR (PP-OCR ONNX models bundled in the package, Apache-2.0), and the personal-data
rules on what it reads.

Only the bundled default models are ever used: another model type or language makes RapidOCR download
models at run time, which a worker must never do. Detection runs on the image resized so its longer
side is at most 960 px (``Det.limit_type=max``): on screenshots that reads the same text as the default
settings in a quarter to a half of the time (0.2-0.4 s against 0.4-1.6 s per image on 2 cores). Lines
read with less confidence than the floor are dropped: they are mostly noise read into textures.
"""

from __future__ import annotations

import threading
import time
from importlib.metadata import version

import numpy as np
from PIL import Image

from moderation_worker.specialists.base import Analysis, Signal, require, rgb
from moderation_worker.specialists.personal_data import find_personal_data, mask

PERSONAL_DATA = "personal_data"


class OcrSpecialist:
    """Reads an image's text; signals ``personal_data`` (1.0 when a rule matches), evidence masked.

    ``details["text"]``: what was read, masked and cut to ``max_chars``, for prompts and pages.
    Thread-safe: one engine per thread (ONNX sessions are, RapidOCR's pre- and post-processing not).
    """

    name = "ocr"

    def __init__(
        self,
        *,
        min_confidence: float = 0.7,
        limit_side_len: int = 960,
        max_chars: int = 2000,
        threads: int = 1,
    ):
        require("rapidocr", self.name)
        require("onnxruntime", self.name)
        self.min_confidence = min_confidence
        self.limit_side_len = limit_side_len
        self.max_chars = max_chars
        self.threads = threads  # per engine: OCR must leave the model its cores
        # The package's version names its bundled models; the settings change what is read.
        self.version = f"rapidocr-{version('rapidocr')}-{limit_side_len}-{min_confidence}"
        self._local = threading.local()

    def _engine(self):
        engine = getattr(self._local, "engine", None)
        if engine is None:
            from rapidocr import RapidOCR

            engine = RapidOCR(
                params={
                    "Global.log_level": "error",
                    "Det.limit_type": "max",
                    "Det.limit_side_len": self.limit_side_len,
                    "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
                    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                }
            )
            self._local.engine = engine
        return engine

    def read_lines(self, image: Image.Image) -> list[tuple[str, float]]:
        """(text, confidence) of every line at or above the confidence floor, in reading order."""
        output = self._engine()(np.asarray(rgb(image)))
        texts, scores = output.txts or (), output.scores or ()
        return [(text, float(score)) for text, score in zip(texts, scores, strict=True)
                if score >= self.min_confidence and text.strip()]  # fmt: skip

    def analyse(self, image: Image.Image) -> Analysis:
        started = time.perf_counter()
        lines = self.read_lines(image)
        text = "\n".join(line for line, _ in lines)
        findings = find_personal_data(text)
        masked = mask(text, findings)
        evidence = tuple(f"{f.kind}: {f.masked}" for f in findings)
        return Analysis(
            specialist=self.name,
            signals=(Signal(PERSONAL_DATA, 1.0 if findings else 0.0, evidence),),
            elapsed_ms=(time.perf_counter() - started) * 1000,
            details={
                "text": masked[: self.max_chars],
                "lines": len(lines),
                "truncated": len(masked) > self.max_chars,
            },
        )
