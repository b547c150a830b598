"""Model-local fixtures: a scorer over the root conftest's tiny GLM-4.6V-style model, and test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def scorer(tiny_model_dir: Path):
    """A scorer with no feature cache, shared by tests that only read scores."""
    from moderation_worker.model.hf import HFScorer

    return HFScorer.from_pretrained(str(tiny_model_dir), local_files_only=True)


@pytest.fixture
def noise_image():
    """Deterministic RGB noise images of any size; noise makes every patch matter to the scores."""
    rng = np.random.default_rng(1234)

    def make(width: int, height: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")

    return make
