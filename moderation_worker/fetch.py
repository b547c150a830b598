"""The fetch stage: ``s3://bucket/key`` to bytes, with every failure classified.

Classification is the point of this module. The event's fault (no such bucket or key, access to
that object denied, too large, a request S3 refuses as invalid for this object) is a
``PermanentError`` with a dead-letter code; the infrastructure's fault (endpoint unreachable,
timeouts, throttling, 5xx, our own credentials or configuration rejected, any 4xx not known to be
the request's fault) is a ``StorageUnavailableError``: retried. S3 answers are classified by their
error code against explicit lists; only the listed request faults are dead-lettered at once.

Every fetch runs inside a transfer with a deadline enforced on its connection (``transfer.py``): a
trickling server is cut off and the fetch thread freed. Whether a transient failure that keeps
repeating for one object ends as a dead letter is decided by the pipeline (``retry.ObjectRetries``),
with :meth:`S3Fetcher.store_is_serving` as its probe.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config

from moderation_worker.config import Settings
from moderation_worker.errors import (
    ErrorCode,
    FetchAbortedError,
    FetchDeadlineError,
    PermanentError,
    StorageUnavailableError,
)
from moderation_worker.transfer import Transfers, attach_deadlines

# AWS's rules for bucket names (lenient on dots): 3-63 of a-z 0-9 . - starting and ending alnum.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")

_NOT_FOUND_BUCKET = {"NoSuchBucket"}
_NOT_FOUND_KEY = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
# Our own credentials being wrong is an operator problem, not the event's: every event would fail.
_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
# The request's fault, for this object only: S3 refuses it as invalid and would refuse it again. An
# allowlist: a code not here, even a 4xx, is retried (configuration, clock, throttling and codes a
# store invents: AuthorizationHeaderMalformed, PermanentRedirect, RequestTimeout, RequestTimeTooSkewed,
# SlowDown, 5xx), because dead-lettering a good event is worse than retrying a bad one.
_REQUEST_FAULT = {
    "InvalidArgument",
    "InvalidRequest",
    "KeyTooLongError",
    "InvalidObjectState",  # archived (Glacier): it needs a restore before it can be read
    "InvalidObjectName",
    "InvalidURI",
}
# What a probe GET of a key that does not exist may answer when the store is serving us.
_PROBE_SERVING = {"NoSuchKey", "404", "NotFound", "AccessDenied", "403", "Forbidden"}
# Dot segments are never sent: stores and proxies normalise "a/../b" to "b" (reading another
# tenant's object) or refuse it (SeaweedFS answers 400). Such keys are refused, never rewritten.
_DOT_SEGMENTS = {".", ".."}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Fetcher(Protocol):
    def fetch(self, url: str) -> FetchedObject: ...


@dataclass(frozen=True)
class FetchedObject:
    location: S3Location
    data: bytes
    content_type: str | None
    etag: str | None


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket/key`` or raise PermanentError(unsupported_url) saying what was expected."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise PermanentError(
            ErrorCode.UNSUPPORTED_URL,
            f"image_url {url[:200]!r} has scheme {parts.scheme or 'none'!r}; expected s3://bucket/key",
        )
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not _BUCKET_NAME.match(bucket):
        raise PermanentError(
            ErrorCode.UNSUPPORTED_URL, f"image_url {url[:200]!r}: {bucket!r} is not a valid bucket name"
        )
    if not key or parts.query or parts.fragment:
        raise PermanentError(
            ErrorCode.UNSUPPORTED_URL,
            f"image_url {url[:200]!r}: expected s3://bucket/key with a key and no query",
        )
    if _DOT_SEGMENTS.intersection(key.split("/")):
        raise PermanentError(
            ErrorCode.UNSUPPORTED_URL,
            f"image_url {url[:200]!r}: the key has '.' or '..' segments, which are refused (stores and "
            "proxies normalise them into another key); upload it under a key without them",
        )
    return S3Location(bucket, key)


def make_s3_client(settings: Settings):
    """A boto3 S3 client with explicit timeouts and bounded retries; the standard credential chain
    unless keys are configured."""
    config = Config(
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        max_pool_connections=max(10, settings.fetch_concurrency),
        s3={"addressing_style": settings.s3_addressing_style},
    )
    credentials = {}
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        credentials = {
            "aws_access_key_id": settings.s3_access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
        }
    session = boto3.session.Session()
    client = session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=config,
        **credentials,
    )
    attach_deadlines(client)  # each request's socket joins its fetch's transfer: deadlines are enforced
    return client


class S3Fetcher:
    """Downloads objects, refusing ones over ``max_bytes`` before reading their body.

    Each fetch, headers and body, must finish within ``timeout_s`` or its connection is cut
    (``FetchDeadlineError``); a stop set on ``transfers`` cuts every fetch (``FetchAbortedError``).
    """

    def __init__(
        self, *, client, max_bytes: int, transfers: Transfers | None = None, timeout_s: float = 30.0
    ) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._transfers = transfers or Transfers()
        self._timeout_s = timeout_s

    @property
    def transfers(self) -> Transfers:
        return self._transfers

    def fetch(self, url: str) -> FetchedObject:
        location = parse_s3_url(url)
        with self._transfers.transfer(location.url, self._timeout_s) as transfer:
            try:
                return self._get(location)
            except (StorageUnavailableError, boto_errors.BotoCoreError, OSError, ValueError) as exc:
                if transfer.cut_reason == "stopping":
                    raise FetchAbortedError(
                        f"fetch of {location.url} aborted: the worker is stopping"
                    ) from exc
                if transfer.cut_reason == "deadline":
                    raise FetchDeadlineError(
                        f"fetching {location.url} did not finish within {self._timeout_s:g} s and was "
                        "cut off (the store is slow or trickling this object)"
                    ) from exc
                if isinstance(exc, StorageUnavailableError):
                    raise
                raise StorageUnavailableError(f"S3 connection broke fetching {location.url}: {exc}") from exc

    def store_is_serving(self, bucket: str) -> bool:
        """Whether the store answers a cheap request properly now: a GET of a key that does not exist.

        NoSuchKey (or AccessDenied, without list permission) means the store and our credentials work;
        a timeout, a connection failure, a 5xx or a credential error means they do not.
        """
        key = f".moderation-worker-probe/{uuid.uuid4().hex}"
        with self._transfers.transfer(f"s3://{bucket}/{key}", min(self._timeout_s, 10.0)):
            try:
                self._client.get_object(Bucket=bucket, Key=key)["Body"].close()
            except boto_errors.ClientError as exc:
                return str(exc.response.get("Error", {}).get("Code", "")) in _PROBE_SERVING
            except (boto_errors.BotoCoreError, OSError, ValueError):
                return False
        return True

    def _get(self, location: S3Location) -> FetchedObject:
        try:
            response = self._client.get_object(Bucket=location.bucket, Key=location.key)
        except boto_errors.ClientError as exc:
            raise _classify_client_error(exc, location) from exc
        except (boto_errors.BotoCoreError, OSError) as exc:
            raise StorageUnavailableError(f"S3 unreachable fetching {location.url}: {exc}") from exc
        body = response["Body"]
        try:
            length = int(response.get("ContentLength", -1))
            if length > self._max_bytes:
                raise PermanentError(
                    ErrorCode.OBJECT_TOO_LARGE,
                    f"{location.url} is {length} bytes; the limit is {self._max_bytes} bytes",
                )
            # Read one byte past the limit: a server that lied about the length still can't flood us.
            data = body.read(self._max_bytes + 1)
        except (boto_errors.BotoCoreError, OSError) as exc:
            raise StorageUnavailableError(f"S3 connection broke reading {location.url}: {exc}") from exc
        finally:
            body.close()
        if len(data) > self._max_bytes:
            raise PermanentError(
                ErrorCode.OBJECT_TOO_LARGE, f"{location.url} is over the limit of {self._max_bytes} bytes"
            )
        if length >= 0 and len(data) != length:
            raise StorageUnavailableError(f"S3 returned {len(data)} of {length} bytes for {location.url}")
        return FetchedObject(location, data, response.get("ContentType"), response.get("ETag"))


def _classify_client_error(exc: boto_errors.ClientError, location: S3Location) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _NOT_FOUND_BUCKET:
        return PermanentError(ErrorCode.BUCKET_NOT_FOUND, f"bucket {location.bucket!r} does not exist")
    if code in _NOT_FOUND_KEY:
        return PermanentError(
            ErrorCode.OBJECT_NOT_FOUND, f"no object {location.key!r} in bucket {location.bucket!r}"
        )
    if code in _CREDENTIALS:
        return StorageUnavailableError(
            f"S3 rejected the worker's credentials ({code}); check the worker's configuration"
        )
    if code in _DENIED:
        return PermanentError(
            ErrorCode.ACCESS_DENIED, f"the worker may not read {location.url} (S3 said {code})"
        )
    if code in _REQUEST_FAULT:
        message = str(error.get("Message", "") or "")[:300]
        return PermanentError(
            ErrorCode.OBJECT_REJECTED,
            f"S3 refused the request for {location.url} as invalid ({code}, HTTP {status}): {message}",
        )
    # Everything else (throttling, 5xx, unknown codes) is retried: wrongly dead-lettering a good
    # event is worse than retrying a bad one. If this object alone keeps failing while the store serves
    # others, ObjectRetries ends it as retries_exhausted.
    message = error.get("Message", "")
    return StorageUnavailableError(f"S3 error {code or status} fetching {location.url}: {message}")


class LocalFileFetcher:
    """Reads local files for ``moderation-worker check``; S3 URLs go to the wrapped S3 fetcher."""

    def __init__(self, *, max_bytes: int, s3: S3Fetcher | None = None) -> None:
        self._max_bytes = max_bytes
        self._s3 = s3

    def fetch(self, url: str) -> FetchedObject:
        if url.startswith("s3://"):
            if self._s3 is None:
                raise PermanentError(ErrorCode.UNSUPPORTED_URL, "no S3 client configured for " + url)
            return self._s3.fetch(url)
        path = Path(url)
        try:
            size = path.stat().st_size
            if size > self._max_bytes:
                raise PermanentError(
                    ErrorCode.OBJECT_TOO_LARGE,
                    f"{path} is {size} bytes; the limit is {self._max_bytes} bytes",
                )
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise PermanentError(ErrorCode.OBJECT_NOT_FOUND, f"no file {path}") from exc
        except PermissionError as exc:
            raise PermanentError(ErrorCode.ACCESS_DENIED, f"cannot read {path}") from exc
        return FetchedObject(S3Location("local", str(path)), data, None, None)
