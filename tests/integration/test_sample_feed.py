"""``samples publish`` and ``samples follow`` (the compose stack's feeder and printer) against the real
broker and S3, with the worker between them."""

from __future__ import annotations

import threading
import uuid

from moderation_worker import sample_feed, samples
from moderation_worker.app import build_runtime
from moderation_worker.model.fake import FakeScorer


def test_published_samples_come_out_one_line_each_verdicts_and_the_dead_letter(make_settings):
    settings = make_settings(max_image_bytes=8 * 1024 * 1024, max_image_edge=1024)
    bucket = f"samples-{uuid.uuid4().hex[:10]}"  # does not exist yet: publish creates it

    events = sample_feed.publish_samples(settings, bucket=bucket, prefix="feed", tenant="t1")
    again = sample_feed.publish_samples(settings, bucket=bucket, prefix="feed", tenant="t1")
    assert len(events) == len(again) == len(samples.SAMPLE_PHOTOS) + 1
    ids = [e["event_id"] for e in events + again]
    assert len(set(ids)) == len(ids), "every run publishes new event ids"

    summary = build_runtime(settings.model_copy(update={"max_events": len(ids)}), scorer=FakeScorer()).run()
    assert summary.results + summary.dead_letters == len(ids)

    lines: list[str] = []
    printed = sample_feed.follow(
        settings, lines.append, stop=threading.Event(), max_records=len(ids), timeout_s=30,
        from_beginning=True,
    )  # fmt: skip
    assert printed == len(ids)
    for event_id in ids:
        (line,) = [line for line in lines if f" {event_id} " in line]
        if event_id.endswith("not-an-image.pdf"):
            assert line.startswith("dead-letter ") and "not_an_image" in line
        else:
            assert line.startswith("verdict ") and line.split()[2] in ("allow", "review", "block")


def test_without_scikit_image_the_drawn_images_are_published(monkeypatch):
    def missing(*_args):
        raise RuntimeError("sample photos need scikit-image")

    monkeypatch.setattr(samples, "sample_photos", missing)
    uploads = sample_feed.sample_uploads()
    assert set(uploads) == set(samples.synthetic_photos()) | {"not-an-image.pdf"}
    assert samples.synthetic_photos() == samples.synthetic_photos()  # drawn, not random


def test_an_unreadable_result_is_described_not_raised(make_settings):
    settings = make_settings()
    assert sample_feed.describe(settings.results_topic, settings, b"{oops", []) == (
        f"unreadable record on {settings.results_topic}"
    )
