"""Every error path answers its stable code, over real HTTP (httpx against uvicorn on loopback)."""

from __future__ import annotations

import hashlib
import http.server
import threading

import httpx
import pytest

from moderation_worker import samples
from moderation_worker.localstack import free_port
from tests.api.conftest import data_url, png

pytestmark = [pytest.mark.integration]


def _moderate(base: str, image_url: str, **extra) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/moderate", json={"event_id": "e1", "image_url": image_url, **extra}, timeout=30
    )


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.fixture
def api(serve_api):
    return serve_api(
        http_allow_hosts=("127.0.0.1", "169.254.169.254", "localhost"), max_body_bytes=512 * 1024
    )


def test_a_decompression_bomb_is_refused_with_its_code(api):
    assert _code(_moderate(api.url, data_url(samples.decompression_bomb_png()))) == (
        422,
        "decompression_bomb",
    )


def test_a_missing_object_and_bucket_are_not_found(api, bucket_factory):
    bucket = bucket_factory("api")
    assert _code(_moderate(api.url, f"s3://{bucket}/nope.png")) == (404, "object_not_found")
    assert _code(_moderate(api.url, "s3://no-such-bucket-here/x.png")) == (404, "bucket_not_found")


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@@not base64@@@",
        "data:text/html;base64,PGI+",
        "data:image/png,rawbytes",
        "data:image/png;base64,",
    ],
)
def test_a_bad_data_url_is_refused(api, url):
    assert _code(_moderate(api.url, url)) == (400, "invalid_data_url")


@pytest.mark.parametrize("url", ["ftp://example.com/x.png", "file:///etc/passwd", "gopher://x/", "x.png"])
def test_an_unsupported_scheme_is_refused(api, url):
    assert _code(_moderate(api.url, url)) == (400, "unsupported_url")


def test_an_oversized_body_is_refused_before_it_is_read(api):
    big = data_url(b"\x89PNG" + b"\0" * (600 * 1024))
    assert _code(_moderate(api.url, big)) == (413, "payload_too_large")

    def chunks():  # no Content-Length: cut off as soon as it passes the limit
        yield b'{"event_id": "e", "image_url": "data:image/png;base64,'
        for _ in range(100):
            yield b"A" * 16384
        yield b'"}'

    response = httpx.post(
        f"{api.url}/v1/moderate", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert _code(response) == (413, "payload_too_large")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/x.png", "loopback"),  # allowlisted host, but loopback is not opted in
        ("http://localhost:9/x.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),  # the metadata service
        ("http://[::ffff:127.0.0.1]:9/x.png", None),  # not on the allowlist by that name
        ("http://evil.example/x.png", None),
    ],
)
def test_the_ssrf_guard_refuses_loopback_metadata_and_unlisted_hosts(api, url, why):
    response = _moderate(api.url, url)
    assert _code(response) == (403, "url_not_allowed")
    if why:
        assert why in response.json()["error"]["message"]


def test_an_allowlisted_http_url_is_fetched_when_loopback_is_opted_in(serve_api):
    # Given an image server on loopback, which the test opts in explicitly
    image = png((10, 200, 10))
    port = free_port()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/image.png")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        served = serve_api(http_allow_hosts=("127.0.0.1",), http_allow_loopback=True)
        response = _moderate(served.url, f"http://127.0.0.1:{port}/moved")  # a redirect, followed and checked
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert body["image"]["url"] == f"http://127.0.0.1:{port}/moved"


def test_a_request_without_a_valid_key_is_refused_when_keys_are_configured(serve_api):
    from moderation_worker.api.keys import new_key

    key, entry = new_key("tests")
    served = serve_api(keys=(entry,))
    url = data_url(png())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
        response = httpx.post(
            f"{served.url}/v1/moderate", json={"event_id": "k", "image_url": url}, headers=headers
        )
        assert _code(response) == (401, "unauthorized")
    ok = httpx.post(f"{served.url}/v1/moderate", json={"event_id": "k", "image_url": url},
                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert ok.status_code == 200


def test_a_storage_outage_answers_503_with_retry_after(serve_api):
    served = serve_api(settings={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    response = _moderate(served.url, "s3://bucket/key.png")
    assert _code(response) == (503, "storage_unavailable") and int(response.headers["Retry-After"]) >= 1


def test_openai_inputs_without_one_image_are_refused(api):
    url = data_url(png())
    cases = [
        ({"input": "just text"}, "no_image"),
        ({"input": [{"type": "text", "text": "hi"}]}, "no_image"),
        ({"input": [{"type": "image_url", "image_url": {"url": url}}] * 2}, "too_many_images"),
        ({"input": [{"type": "video", "video": {}}]}, "invalid_request"),
        ({"nothing": 1}, "invalid_request"),
    ]
    for body, code in cases:
        assert _code(httpx.post(f"{api.url}/v1/moderations", json=body)) == (400, code), body


def test_our_contract_errors_keep_the_dead_letter_codes(api):
    assert _code(_moderate(api.url, data_url(png()), policies=["lasers"])) == (400, "unknown_policy")
    assert _code(httpx.post(f"{api.url}/v1/moderate", content=b"{not json")) == (400, "invalid_json")
    # the topic's parser reads the body: a key twice, or nesting past the limit, is invalid_json too
    twice = b'{"event_id": "a", "event_id": "b", "image_url": "s3://b/k.png"}'
    assert _code(httpx.post(f"{api.url}/v1/moderate", content=twice)) == (400, "invalid_json")
    nested = b"[" * 100 + b"]" * 100
    deep = b'{"event_id": "a", "image_url": "s3://b/k.png", "metadata": {"x": ' + nested + b"}}"
    response = httpx.post(f"{api.url}/v1/moderations", content=deep)
    assert _code(response) == (400, "invalid_json") and "the body" in response.json()["error"]["message"]
    assert _code(httpx.post(f"{api.url}/v1/moderate", json={"image_url": data_url(png())})) == (
        400,
        "invalid_event",
    )
