"""Distinct photos for the benchmarks, made from the real photos that ship with scikit-image.

Each variant is a random crop of one source photo, maybe mirrored, resized, with a little sensor-like
noise and a brightness shift: distinct bytes (so no cache can serve one for another) that still look
like photographs to a JPEG encoder and a vision encoder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from moderation_worker import samples

_FORMAT = 1  # bump when variants change, so files made before are not reused

# The photographs among the package's samples (the rest are text, a GIF and a page).
SOURCES = samples.SAMPLE_PHOTOS[:6]


def _sources() -> list[Image.Image]:
    return [Image.open(io.BytesIO(data)).convert("RGB") for data in samples.sample_photos(SOURCES).values()]


def variants(count: int, size: tuple[int, int], *, seed: int = 0) -> list[Image.Image]:
    """``count`` distinct RGB images of ``size`` (width, height), cycling over the source photos."""
    sources = _sources()
    return [_variant(sources, index, size, seed) for index in range(count)]


def _variant(sources: list[Image.Image], index: int, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed * 1_000_003 + index)
    source = sources[index % len(sources)]
    width, height = size
    # The largest crop of the target's aspect ratio, shrunk to 70-100 % and placed at random.
    scale = min(source.width / width, source.height / height) * rng.uniform(0.7, 1.0)
    crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
    left = int(rng.integers(0, source.width - crop_w + 1))
    top = int(rng.integers(0, source.height - crop_h + 1))
    image = source.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32)
    pixels = pixels + 3.0 * noise + np.float32(rng.uniform(-8.0, 8.0))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_files(folder: Path, count: int, size: tuple[int, int], *, seed: int = 0) -> list[Path]:
    """``count`` distinct JPEG variants of ``size``, made once and kept under ``folder``."""
    width, height = size
    target = folder / f"jpeg-v{_FORMAT}-{width}x{height}-seed{seed}"
    paths = [target / f"{index:04d}.jpg" for index in range(count)]
    missing = [index for index, path in enumerate(paths) if not path.exists()]
    if missing:
        target.mkdir(parents=True, exist_ok=True)
        # Variant i depends only on (seed, i), so making the missing ones alone gives the same files.
        sources = _sources()
        for index in missing:
            data = jpeg(_variant(sources, index, size, seed))
            partial = paths[index].with_suffix(".part")
            partial.write_bytes(data)
            partial.replace(paths[index])
    return paths
