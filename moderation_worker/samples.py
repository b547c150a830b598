"""Sample objects for the local demo and the integration tests.

Real photos ship inside scikit-image (an optional dependency: the ``local`` extra); the bad
objects are made here, each one a real file that fails in exactly one way.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

SAMPLE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "camera.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "page.png",
    "text.png",
    "no_time_for_that_tiny.gif",
)


def photo_dir() -> Path:
    try:
        import skimage
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise RuntimeError("sample photos need scikit-image: pip install 'moderation-worker[local]'") from exc
    return Path(skimage.__file__).parent / "data"


def sample_photos(names: tuple[str, ...] = SAMPLE_PHOTOS) -> dict[str, bytes]:
    """Real photos by file name (PNG, JPEG, animated GIF; grayscale and colour; square and not)."""
    folder = photo_dir()
    return {name: (folder / name).read_bytes() for name in names}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def decompression_bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels: harmless unless someone decodes it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def truncated_jpeg(source: bytes | None = None) -> bytes:
    """A real JPEG cut in half: the header reads, the pixels don't."""
    if source is None:
        buffer = io.BytesIO()
        Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, format="JPEG", quality=90)
        source = buffer.getvalue()
    return source[: len(source) // 2]


def unsupported_format_image() -> bytes:
    """A valid image in a format outside the default allowlist (Windows ICO)."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="ICO")
    return buffer.getvalue()


def not_an_image() -> bytes:
    return b"%PDF-1.7\n% this is a PDF, not an image\n1 0 obj << /Type /Catalog >> endobj\n"


def synthetic_photos(count: int = 6, *, size: tuple[int, int] = (640, 480)) -> dict[str, bytes]:
    """Deterministic JPEG and PNG images drawn with Pillow (gradients and shapes), for where the
    real photos of scikit-image are not installed (the container images)."""
    from PIL import ImageDraw

    width, height = size
    photos: dict[str, bytes] = {}
    for index in range(count):
        red = Image.linear_gradient("L").resize(size)
        green = Image.radial_gradient("L").resize(size).rotate(30 * index)
        blue = red.rotate(90 * (index % 4)).resize(size)
        image = Image.merge("RGB", (red, green, blue))
        draw = ImageDraw.Draw(image)
        for shape in range(3 + index):
            left, top = (37 * (shape + index)) % width, (53 * (shape + 2 * index)) % height
            box = (left, top, min(width, left + 40 + 17 * shape), min(height, top + 30 + 11 * shape))
            draw.ellipse(box, fill=((60 * shape) % 256, (90 * index) % 256, 180))
        buffer = io.BytesIO()
        kind = "PNG" if index % 2 else "JPEG"
        image.save(buffer, format=kind, **({} if kind == "PNG" else {"quality": 88}))
        photos[f"synthetic-{index}.{kind.lower().replace('jpeg', 'jpg')}"] = buffer.getvalue()
    return photos


_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)  # Debian's fonts-dejavu-core


def dejavu(size: int):
    """DejaVu Sans at ``size`` points where the system has it, else Pillow's bundled default font."""
    from PIL import ImageFont

    for folder in (*_FONT_DIRS, Path(ImageFont.__file__).parent / "fonts"):
        path = folder / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def screenshot(
    lines: list[tuple[str, int, tuple[int, int, int]]],
    *,
    size: tuple[int, int] = (900, 360),
    origin: tuple[int, int] = (24, 20),
    line_spacing: float = 2.0,
) -> Image.Image:
    """A white page with one text line per (text, font size, colour), top to bottom, each line
    ``line_spacing`` times its font size below the last: a synthetic screenshot for OCR."""
    from PIL import ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    x, y = origin
    for text, points, colour in lines:
        draw.text((x, y), text, fill=colour, font=dejavu(points))
        y += int(points * line_spacing)
    return image
