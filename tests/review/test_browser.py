"""The console in a real browser (Playwright driving Debian's chromium): log in, open the queue, take
the next item, see it blurred, reveal it, decide with the keyboard, and find the decision in
moderation.decisions. Screenshots of the queue and the item land in .test-artifacts/."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from moderation_worker import samples
from moderation_worker.app import make_fetcher
from moderation_worker.config import Settings
from moderation_worker.readback import read_topic
from moderation_worker.review import auth
from moderation_worker.review.ingest import ingest
from moderation_worker.review.metrics import ConsoleMetrics
from moderation_worker.review.outbox import OutboxPublisher
from moderation_worker.review.service import decisions_producer, web_config
from moderation_worker.review.settings import ReviewSettings
from moderation_worker.review.store import make_engine, migrate, session_factory, transaction
from moderation_worker.review.web.context import ConsoleContext
from tests.browser import ServerThread, screenshot
from tests.review.factories import PACK, record, verdict
from tests.review.web_fixtures import PASSWORD

pytestmark = [pytest.mark.integration]


@pytest.fixture
def live_console(tmp_path, kafka_bootstrap, topic_factory, s3_endpoint, bucket_factory):
    from moderation_worker.localstack import free_port

    bucket = bucket_factory("console")
    client = s3_endpoint.client()
    photo = samples.sample_photos(("astronaut.png",))["astronaut.png"]
    client.put_object(Bucket=bucket, Key="uploads/astronaut.png", Body=photo)
    decisions_topic = topic_factory("decisions")
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        s3_endpoint_url=s3_endpoint.endpoint_url,
        s3_region=s3_endpoint.region,
        s3_access_key_id=SecretStr(s3_endpoint.access_key),
        s3_secret_access_key=SecretStr(s3_endpoint.secret_key),
        delivery_timeout_s=10,
    )
    review = ReviewSettings(
        database_url=f"sqlite:///{tmp_path / 'console.db'}", port=free_port(), decisions_topic=decisions_topic
    )
    engine = make_engine(review.database_url)
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        flagged = verdict(
            "browser-1",
            content_id="listing-42",
            triggered={"hate_symbols": 0.93, "weapons": 0.7},
            image_url=f"s3://{bucket}/uploads/astronaut.png",
            image=photo,
            size=(512, 512),
            metadata={"uploader": "u-1", "note": "<img src=x onerror=alert(1)>"},
        )
        others = [
            verdict(f"browser-{n}", content_id=f"listing-{n}", triggered={"drugs": 0.8}) for n in range(2, 6)
        ]
        ingest(session, [record(v, offset=n) for n, v in enumerate([flagged, *others])], sample_rate=0)
        auth.add_user(session, "moira", "moderator", PASSWORD, actor="test")
    publisher = OutboxPublisher(sessions, lambda: decisions_producer(settings), interval_s=0.2).start()
    context = ConsoleContext(
        settings=settings,
        review=review,
        engine=engine,
        sessions=sessions,
        pack=PACK,
        fetcher=make_fetcher(settings),
        metrics=ConsoleMetrics(),
        outbox=publisher,
    )
    server = ServerThread(web_config(context)).start()
    try:
        yield f"http://127.0.0.1:{review.port}", context
    finally:
        server.stop()
        publisher.stop()
        engine.dispose()


def test_a_moderator_logs_in_takes_an_item_reveals_it_and_decides_with_the_keyboard(browser, live_console):
    base, context = live_console
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(base + "/")
        assert page.url.startswith(base + "/login")  # no session: sent to log in

        page.fill('input[name="username"]', "moira")
        page.fill('input[name="password"]', PASSWORD)
        page.click('button[type="submit"]')
        page.wait_for_selector(".stats")
        assert page.locator('.count[data-queue="default"]').inner_text() == "5"
        screenshot(page, "review-queue")

        page.keyboard.press("n")  # take the next item: the block one comes first
        page.wait_for_selector("#item-image")
        first_item = page.url
        assert "listing-42" in page.content()
        figure = page.locator("#picture")
        assert "blurred" in figure.get_attribute("class")
        page.wait_for_function("document.getElementById('item-image').naturalWidth > 0")  # the image loaded
        assert page.locator("#metadata").inner_text().count("<img src=x onerror=alert(1)>") == 1  # as text

        page.keyboard.press("r")
        assert "blurred" not in (figure.get_attribute("class") or "")
        screenshot(page, "review-item")

        page.keyboard.press("u")  # uphold, then the next item
        page.wait_for_url(lambda url: "/items/" in url and url != first_item)
        assert "listing-42" not in page.content()
    finally:
        page.close()

    decisions = read_topic(
        context.settings.kafka_bootstrap_servers, context.review.decisions_topic, expected=1, timeout_s=30
    )
    message = json.loads(decisions[0].value)
    assert (message["event_id"], message["action"], message["moderator"]) == ("browser-1", "uphold", "moira")
    assert decisions[0].key == b"k"  # keyed like the verdict record
