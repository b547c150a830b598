"""Synthetic screenshots drawn with Pillow and DejaVu (on the machine image), and the sample photos."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from moderation_worker import samples

_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path(ImageFont.__file__).parent / "fonts")


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for folder in _FONT_DIRS:
        path = folder / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def screenshot(lines: list[tuple[str, int, tuple[int, int, int]]], *, size=(900, 360)) -> Image.Image:
    """A white page with one text line per (text, font size, colour), top to bottom."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    y = 20
    for text, points, colour in lines:
        draw.text((24, y), text, fill=colour, font=font(points))
        y += int(points * 2.0)
    return image


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    still = {name: data for name, data in samples.sample_photos().items() if not name.endswith(".gif")}
    return {name: Image.open(io.BytesIO(data)).convert("RGB") for name, data in still.items()}
