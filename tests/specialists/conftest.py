"""Synthetic screenshots drawn with Pillow and DejaVu (on the machine image), and the sample photos."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from moderation_worker import samples

screenshot = samples.screenshot  # the tests draw their pages as the demo and the benchmark do


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    still = {name: data for name, data in samples.sample_photos().items() if not name.endswith(".gif")}
    return {name: Image.open(io.BytesIO(data)).convert("RGB") for name, data in still.items()}
