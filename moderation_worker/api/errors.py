"""Every error the API answers, with a stable code and an HTTP status.

The codes of the dead-letter topic keep their names here (``object_not_found``, ``decompression_bomb``,
...), so a client switching between the API and the topic switches on one vocabulary; the API adds
the codes only HTTP has (``unauthorized``, ``rate_limited``, ``queue_full``, ``timeout``, ...). The body
is OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from moderation_worker.errors import ErrorCode, FetchAbortedError, ModerationError, PermanentError

# The event's (the request's) fault: 4xx, by dead-letter code.
STATUS_OF_CODE: dict[str, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_EVENT: 400,
    ErrorCode.UNSUPPORTED_URL: 400,
    ErrorCode.UNKNOWN_POLICY: 400,
    ErrorCode.BUCKET_NOT_FOUND: 404,
    ErrorCode.OBJECT_NOT_FOUND: 404,
    ErrorCode.ACCESS_DENIED: 403,
    ErrorCode.OBJECT_TOO_LARGE: 413,
    ErrorCode.NOT_AN_IMAGE: 422,
    ErrorCode.UNSUPPORTED_IMAGE: 422,
    ErrorCode.DECOMPRESSION_BOMB: 422,
    ErrorCode.CORRUPT_IMAGE: 422,
    ErrorCode.OBJECT_REJECTED: 422,
    ErrorCode.RETRIES_EXHAUSTED: 502,
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.param = param

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status in (401, 403) and self.code in ("unauthorized", "forbidden"):
            kind = "authentication_error"
        if self.status == 429:
            kind = "rate_limit_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return (
            {"Retry-After": str(max(1, round(self.retry_after_s)))} if self.retry_after_s is not None else {}
        )


def from_moderation_error(error: ModerationError) -> ApiError:
    """A pipeline error as the API answers it: the request's fault 4xx, the infrastructure's 503."""
    if isinstance(error, PermanentError):
        return ApiError(STATUS_OF_CODE.get(error.code.value, 400), error.code.value, error.message)
    if isinstance(error, FetchAbortedError):
        return ApiError(
            503, "shutting_down", "the server is stopping; send the request again", retry_after_s=1
        )
    return ApiError(503, "storage_unavailable", f"the image store is not answering: {error}", retry_after_s=5)
