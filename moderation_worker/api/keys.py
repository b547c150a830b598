"""Who may call the API: hashed API keys (``Authorization: Bearer``), a per-key rate limit, and the
rule for a server with no keys: loopback clients only, unless anonymous access is switched on."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from ipaddress import ip_address

from moderation_worker.api.errors import ApiError


def new_key(name: str) -> tuple[str, str]:
    """(the key to hand to a client, the ``name:sha256`` entry for MODERATION_API_KEYS)."""
    key = "mw-" + secrets.token_urlsafe(32)
    return key, f"{name}:{hashlib.sha256(key.encode()).hexdigest()}"


@dataclass
class _Bucket:
    tokens: float
    at: float


class KeyRing:
    def __init__(self, entries: tuple[str, ...], *, allow_anonymous: bool, rate_per_key: float) -> None:
        self._keys = {digest: name for name, _, digest in (e.partition(":") for e in entries)}
        self._allow_anonymous = allow_anonymous
        self._rate = rate_per_key
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def authorise(self, authorization: str | None, client_host: str | None) -> str:
        """The caller's key name ("anonymous" or "loopback" without keys); ApiError 401/429 otherwise."""
        if not self._keys:
            if self._allow_anonymous:
                return "anonymous"
            if _is_loopback(client_host):
                return "loopback"
            raise ApiError(
                401, "unauthorized", "this server has no API keys and answers loopback clients only"
            )
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "send an API key as Authorization: Bearer <key>")
        digest = hashlib.sha256(key.strip().encode()).hexdigest()
        name = next((n for d, n in self._keys.items() if hmac.compare_digest(d, digest)), None)
        if name is None:
            raise ApiError(401, "unauthorized", "the API key is not valid")
        self._take(name)
        return name

    def _take(self, name: str) -> None:
        if self._rate <= 0:
            return
        now = time.monotonic()
        burst = max(1.0, 2 * self._rate)
        with self._lock:
            bucket = self._buckets.setdefault(name, _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
            if bucket.tokens < 1:
                raise ApiError(429, "rate_limited", f"key {name!r} is over {self._rate:g} requests/s",
                               retry_after_s=(1 - bucket.tokens) / self._rate)  # fmt: skip
            bucket.tokens -= 1


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ip_address(host).is_loopback
    except ValueError:
        return False
