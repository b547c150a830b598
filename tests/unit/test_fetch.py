"""Classification of S3 failures: the event's fault is permanent, the infrastructure's is retried.

Server replies are stubbed with botocore's Stubber (one piece alone); the integration tests fetch
from a real S3."""

from __future__ import annotations

import io

import boto3
import pytest
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import Stubber

from moderation_worker.config import Settings
from moderation_worker.errors import ErrorCode, PermanentError, StorageUnavailableError
from moderation_worker.fetch import S3Fetcher, make_s3_client, parse_s3_url
from moderation_worker.localstack import free_port


def _stubbed(max_bytes: int = 100):
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=Config(retries={"max_attempts": 1}),
    )
    return S3Fetcher(client=client, max_bytes=max_bytes), Stubber(client)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://example.com/a.jpg", "scheme 'https'"),
        ("s3://bucket", "with a key"),
        ("s3://Bad_Bucket/key", "not a valid bucket name"),
        ("s3://bucket/key?versionId=1", "no query"),
        ("/local/path.jpg", "scheme 'none'"),
        ("s3://bucket/tenant-a/../tenant-b/x.jpg", "'.' or '..' segments"),
        ("s3://bucket/./x.jpg", "'.' or '..' segments"),
        ("s3://bucket/a/%2E%2E/b.jpg", "'.' or '..' segments"),  # percent-encoded dots too
        ("s3://bucket/a/..", "'.' or '..' segments"),
    ],
)
def test_urls_that_are_not_s3_bucket_keys_are_unsupported(url, fragment):
    with pytest.raises(PermanentError) as caught:
        parse_s3_url(url)
    assert caught.value.code is ErrorCode.UNSUPPORTED_URL
    assert fragment in caught.value.message


def test_percent_encoded_keys_are_decoded():
    assert parse_s3_url("s3://my.bucket-1/a%20b/c.png").key == "a b/c.png"


def test_dots_inside_a_segment_are_ordinary_key_characters():
    assert parse_s3_url("s3://bucket/a..b/.hidden/c..png").key == "a..b/.hidden/c..png"


@pytest.mark.parametrize(
    "error_code", ["InvalidArgument", "InvalidRequest", "KeyTooLongError", "InvalidObjectState"]
)
def test_answers_that_are_this_requests_fault_are_dead_lettered_as_object_rejected(error_code):
    fetcher, stub = _stubbed()
    stub.add_client_error(
        "get_object", service_error_code=error_code, http_status_code=400, service_message="no good"
    )
    with stub, pytest.raises(PermanentError) as caught:
        fetcher.fetch("s3://bucket/key.png")
    assert caught.value.code is ErrorCode.OBJECT_REJECTED
    assert error_code in caught.value.message and "no good" in caught.value.message


@pytest.mark.parametrize(
    ("error_code", "status", "expected"),
    [
        ("NoSuchBucket", 404, ErrorCode.BUCKET_NOT_FOUND),
        ("NoSuchKey", 404, ErrorCode.OBJECT_NOT_FOUND),
        ("AccessDenied", 403, ErrorCode.ACCESS_DENIED),
    ],
)
def test_the_events_fault_is_a_permanent_error_with_its_code(error_code, status, expected):
    fetcher, stub = _stubbed()
    stub.add_client_error("get_object", service_error_code=error_code, http_status_code=status)
    with stub, pytest.raises(PermanentError) as caught:
        fetcher.fetch("s3://bucket/key.png")
    assert caught.value.code is expected


@pytest.mark.parametrize(
    ("error_code", "status"),
    [
        ("SlowDown", 503),
        ("InternalError", 500),
        ("RequestTimeout", 400),
        ("InvalidAccessKeyId", 403),  # the worker's own credentials: every event would fail alike
        ("SignatureDoesNotMatch", 403),
        ("ExpiredToken", 400),
        ("AuthorizationHeaderMalformed", 400),  # the worker's region is wrong
        ("PermanentRedirect", 301),  # the worker's endpoint is wrong
        ("RequestTimeTooSkewed", 403),  # the worker's clock is wrong
        ("BadRequest", 400),  # an unknown 4xx
        ("SomethingNew", 418),
    ],
)
def test_infrastructure_failures_are_retried_never_dead_lettered(error_code, status):
    fetcher, stub = _stubbed()
    stub.add_client_error("get_object", service_error_code=error_code, http_status_code=status)
    with stub, pytest.raises(StorageUnavailableError):
        fetcher.fetch("s3://bucket/key.png")


def test_an_object_over_the_limit_is_refused_from_its_length_without_reading_the_body():
    fetcher, stub = _stubbed(max_bytes=100)

    class Unreadable(io.BytesIO):
        def read(self, *args):
            raise AssertionError("the body was read")

    body = StreamingBody(Unreadable(b"x" * 500), 500)
    stub.add_response("get_object", {"Body": body, "ContentLength": 500})
    with stub, pytest.raises(PermanentError) as caught:
        fetcher.fetch("s3://bucket/big.png")
    assert caught.value.code is ErrorCode.OBJECT_TOO_LARGE
    assert "500 bytes" in caught.value.message


def test_a_server_that_understates_the_length_still_cannot_send_more_than_the_limit():
    fetcher, stub = _stubbed(max_bytes=100)
    stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(b"x" * 500), 50), "ContentLength": 50})
    with stub, pytest.raises(PermanentError) as caught:
        fetcher.fetch("s3://bucket/liar.png")
    assert caught.value.code is ErrorCode.OBJECT_TOO_LARGE


def test_a_closed_endpoint_is_a_storage_outage():
    port = free_port()
    settings = Settings(
        s3_endpoint_url=f"http://127.0.0.1:{port}",
        s3_connect_timeout_s=0.5,
        s3_max_attempts=1,
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    fetcher = S3Fetcher(client=make_s3_client(settings), max_bytes=100)
    with pytest.raises(StorageUnavailableError, match="unreachable"):
        fetcher.fetch("s3://bucket/key.png")
