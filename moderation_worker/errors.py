"""One exception root, two kinds under it.

The kind decides what happens to an event, in one place (the pipeline):
- ``PermanentError``: the event or its object is bad; retrying cannot help. It goes to the
  dead-letter topic with a stable ``code`` and a message a person can act on.
- ``TransientError``: infrastructure is failing (S3 or broker unreachable, throttling, timeouts).
  The event is retried with backoff and never dead-lettered.
``ConfigurationError`` stops the worker at start (bad policy pack, unusable model).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable dead-letter codes. Consumers of the dead-letter topic switch on these; never rename one."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNSUPPORTED_URL = "unsupported_url"
    BUCKET_NOT_FOUND = "bucket_not_found"
    OBJECT_NOT_FOUND = "object_not_found"
    ACCESS_DENIED = "access_denied"
    OBJECT_TOO_LARGE = "object_too_large"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_IMAGE = "unsupported_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    CORRUPT_IMAGE = "corrupt_image"
    UNKNOWN_POLICY = "unknown_policy"
    CORRUPT_RECORD = "corrupt_record"
    OBJECT_REJECTED = "object_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"


class ModerationError(Exception):
    """Root of every error this package raises on purpose."""


class PermanentError(ModerationError):
    """The event or the object it points to is bad: dead-letter it with ``code``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class RetriesExhaustedError(PermanentError):
    """A transient failure of one object repeated ``attempts`` times while the store served others."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(ErrorCode.RETRIES_EXHAUSTED, message)
        self.attempts = attempts


class TransientError(ModerationError):
    """Infrastructure failed; the same event may well succeed later. Retried, never dead-lettered."""


class StorageUnavailableError(TransientError):
    """S3 failed (unreachable, timing out, throttling, rejecting our credentials): readiness says so."""


class FetchDeadlineError(StorageUnavailableError):
    """One object's transfer ran past its deadline and was cut off (a server trickling bytes)."""


class FetchAbortedError(TransientError):
    """The worker is stopping: its in-flight fetch was cut off. Says nothing about the object."""


class ConfigurationError(ModerationError):
    """The worker cannot start as configured (policy pack, model, settings)."""


class StartupError(ModerationError):
    """The worker could not start although its configuration is valid (a broker that never answers)."""
