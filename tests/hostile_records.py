"""Records and objects any producer or uploader could write, that well-behaved clients never do."""

from __future__ import annotations

import io
import zlib

from PIL import Image, PngImagePlugin


class RawHeaderKey(str):
    """A header key whose bytes are not UTF-8: kafka-python's producer writes whatever encode() gives."""

    raw: bytes

    def __new__(cls, raw: bytes):
        key = super().__new__(cls, raw.decode("latin-1"))
        key.raw = raw
        return key

    def encode(self, encoding="utf-8", errors="strict"):
        return self.raw


def png_with_oversized_metadata(kind: str = "icc", size=(48, 32), colour=(200, 40, 90)) -> bytes:
    """A valid PNG whose ICC profile or zTXt chunk decompresses past Pillow's MAX_TEXT_CHUNK."""
    image = Image.new("RGB", size, colour)
    buffer = io.BytesIO()
    oversized = PngImagePlugin.MAX_TEXT_CHUNK + 1024
    if kind == "icc":
        image.save(buffer, "PNG", icc_profile=b"\0" * oversized)
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text("comment", "x" * oversized, zip=True)
        image.save(buffer, "PNG", pnginfo=info)
    data = buffer.getvalue()
    assert len(zlib.compress(b"\0" * oversized)) < len(data)  # small on the wire, large decompressed
    return data
