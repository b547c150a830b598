"""Where an API request's image comes from: ``s3://`` on the configured store (the worker's fetcher,
with its deadlines and error codes), a ``data:image/...;base64,`` URL, or an allowlisted ``http(s)``
URL fetched with SSRF protection. Blocking: callers run it in a worker thread."""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass

from moderation_worker.api import guarded_http
from moderation_worker.api.errors import ApiError, from_moderation_error
from moderation_worker.api.settings import ApiSettings
from moderation_worker.errors import ModerationError
from moderation_worker.fetch import Fetcher

_DATA_URL = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+)(;[a-zA-Z0-9=.+-]+)*;base64,(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Image:
    data: bytes
    url: str  # what the verdict's image.url says: the URL, or a short description of a data: URL
    fetch_ms: float


def describe_data_url(url: str) -> str:
    media = url[5 : url.find(";")] if ";" in url[:80] else "?"
    return f"data:{media};base64 ({len(url)} characters)"


def resolve(url: str, *, fetcher: Fetcher, settings: ApiSettings, max_bytes: int, timeout_s: float) -> Image:
    started = time.perf_counter()
    if url.startswith("data:"):
        data = _data_url(url, max_bytes)
        return Image(data, describe_data_url(url), (time.perf_counter() - started) * 1000)
    if url.startswith("s3://"):
        try:
            fetched = fetcher.fetch(url)
        except ModerationError as exc:
            raise from_moderation_error(exc) from exc
        return Image(fetched.data, url, (time.perf_counter() - started) * 1000)
    if url.startswith(("http://", "https://")):
        if not settings.http_allow_hosts:
            raise ApiError(403, "url_not_allowed", "this server fetches no http(s) URLs; send s3:// or data:")
        data, _content_type = guarded_http.fetch(
            url,
            allow_hosts=settings.http_allow_hosts,
            allow_loopback=settings.http_allow_loopback,
            timeout_s=timeout_s,
            max_bytes=max_bytes,
        )
        return Image(data, url, (time.perf_counter() - started) * 1000)
    raise ApiError(
        400, "unsupported_url", "image URLs are s3://bucket/key, data:image/...;base64,... or http(s)://"
    )


def _data_url(url: str, max_bytes: int) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        raise ApiError(400, "invalid_data_url", "a data URL must be data:image/<type>;base64,<data>")
    payload = match.group(3)
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise ApiError(413, "object_too_large", f"the image is over the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "invalid_data_url", f"the data URL's base64 is not valid: {exc}") from exc
    if not data:
        raise ApiError(400, "invalid_data_url", "the data URL holds no data")
    return data
