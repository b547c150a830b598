"""An item's image, as the console serves it: fetched with the console's own S3 credentials (never a
public bucket or a URL from the request), decoded under the worker's guards, and re-encoded as a
JPEG, so whatever the object holds (HTML, SVG, a polyglot) can only ever reach the browser as
pixels. The route adds ``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import io

from moderation_worker.errors import ModerationError
from moderation_worker.fetch import Fetcher
from moderation_worker.images import DEFAULT_FORMATS, decode_image

MAX_EDGE = 1600  # enough to judge the image on a moderator's screen


class ImageUnavailable(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def render(fetcher: Fetcher, url: str, *, max_bytes: int, max_pixels: int) -> bytes:
    """The image at ``url`` (an item's verdict's) as JPEG bytes."""
    try:
        fetched = fetcher.fetch(url)
        if len(fetched.data) > max_bytes:
            raise ImageUnavailable(413, "the object is larger than the console shows")
        decoded = decode_image(
            fetched.data, max_edge=MAX_EDGE, max_pixels=max_pixels, allowed_formats=DEFAULT_FORMATS
        )
    except ModerationError as exc:
        status = 404 if "not_found" in getattr(getattr(exc, "code", None), "value", "") else 502
        raise ImageUnavailable(status, str(exc)) from exc
    buffer = io.BytesIO()
    decoded.image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()
