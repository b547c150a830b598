"""A console application over a real database (SQLite), for the HTTP-level tests (in-process ASGI)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from fastapi.testclient import TestClient
from PIL import Image

from moderation_worker.config import Settings
from moderation_worker.fetch import FetchedObject, S3Location, parse_s3_url
from moderation_worker.review import auth
from moderation_worker.review.ingest import ingest
from moderation_worker.review.metrics import ConsoleMetrics
from moderation_worker.review.settings import ReviewSettings
from moderation_worker.review.store import make_engine, migrate, session_factory, transaction
from moderation_worker.review.web.app import create_app
from moderation_worker.review.web.context import ConsoleContext
from tests.review.factories import PACK, record, verdict

PASSWORD = "correct horse battery"


def png_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
    return buffer.getvalue()


class RecordingFetcher:
    """The console's S3 client, in memory: which URLs it was asked for, and what it returns."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.requested: list[str] = []

    def fetch(self, url: str) -> FetchedObject:
        self.requested.append(url)
        location = parse_s3_url(url)
        return FetchedObject(S3Location(location.bucket, location.key), self.objects[url], None, None)


@dataclass
class Console:
    client: TestClient
    context: ConsoleContext
    fetcher: RecordingFetcher

    def login(self, name: str) -> TestClient:
        page = self.client.get("/login")
        response = self.client.post("/login", data={"username": name, "password": PASSWORD, "next": "/"},
                                    follow_redirects=False)  # fmt: skip
        assert response.status_code == 303, (page.status_code, response.text[:500])
        return self.client

    def csrf(self, path: str = "/") -> str:
        page = self.client.get(path)
        match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert match, page.text[:500]
        return match.group(1)


def build_console(tmp_path, *, review: ReviewSettings | None = None, verdicts=None) -> Console:
    review = review or ReviewSettings(database_url=f"sqlite:///{tmp_path / 'console.db'}")
    engine = make_engine(review.database_url)
    migrate(engine)
    sessions = session_factory(engine)
    image = png_bytes()
    verdicts = verdicts if verdicts is not None else [
        verdict("flagged-1", content_id="c1", triggered={"hate_symbols": 0.95}, image_url="s3://bucket/c1.png",
                metadata={"note": "<script>alert('owned')</script>", "<b>key</b>": "x"}),
        verdict("flagged-2", content_id="c2", triggered={"weapons": 0.9}, image_url="s3://bucket/c2.png"),
    ]  # fmt: skip
    fetcher = RecordingFetcher({v.image.url: image for v in verdicts})
    with transaction(sessions) as session:
        ingest(session, [record(v, offset=n) for n, v in enumerate(verdicts)], sample_rate=0)
        for name, role in (("mo", "moderator"), ("mia", "moderator"), ("lee", "lead"), ("ada", "admin")):
            auth.add_user(session, name, role, PASSWORD, actor="test")
    context = ConsoleContext(
        settings=Settings(),
        review=review,
        engine=engine,
        sessions=sessions,
        pack=PACK,
        fetcher=fetcher,
        metrics=ConsoleMetrics(),
    )
    return Console(TestClient(create_app(context), base_url="http://127.0.0.1"), context, fetcher)
