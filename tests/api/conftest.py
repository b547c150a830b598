"""The API served for real: uvicorn on a free 127.0.0.1 port in a thread, over the session's S3, with
the tiny GLM-4.6V-style model (through the production loader) or a fake scorer."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from PIL import Image
from pydantic import SecretStr

from moderation_worker.api.service import Api, build_api, web_config
from moderation_worker.api.settings import ApiSettings
from moderation_worker.config import Settings
from moderation_worker.localstack import free_port
from moderation_worker.model.fake import FakeScorer
from tests.browser import ServerThread


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def png(colour=(30, 120, 200), size=(96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


class SlowScorer(FakeScorer):
    """The fake scorer, taking ``seconds`` per call: long enough for concurrent requests to meet."""

    def __init__(self, seconds: float = 0.2) -> None:
        super().__init__()
        self.seconds = seconds

    def score(self, requests):
        time.sleep(self.seconds)
        return super().score(requests)


@dataclass
class Served:
    url: str
    api: Api
    settings: Settings
    api_settings: ApiSettings


@pytest.fixture
def serve_api(s3_endpoint) -> Iterator[Callable[..., Served]]:
    started: list[ServerThread] = []
    apis: list[Api] = []

    def start(*, scorer=None, settings: dict | None = None, **api_overrides) -> Served:
        values = dict(
            s3_endpoint_url=s3_endpoint.endpoint_url,
            s3_region=s3_endpoint.region,
            s3_access_key_id=SecretStr(s3_endpoint.access_key),
            s3_secret_access_key=SecretStr(s3_endpoint.secret_key),
            s3_max_attempts=1,
            s3_connect_timeout_s=1.0,
            fetch_timeout_s=5.0,
            verdict_cache_entries=0,
            max_image_bytes=2 * 1024 * 1024,
        )
        worker = Settings(**(values | (settings or {})))
        api_settings = ApiSettings(port=free_port(), **api_overrides)
        api = build_api(worker, api_settings, scorer=scorer or FakeScorer())
        server = ServerThread(web_config(api, api_settings)).start()
        started.append(server)
        apis.append(api)
        return Served(f"http://127.0.0.1:{api_settings.port}", api, worker, api_settings)

    yield start
    for server in started:
        server.stop()
    for api in apis:
        api.close()
