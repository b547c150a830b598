"""Verdicts into the queue, on SQLite and PostgreSQL: stored once, one open item per content."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from moderation_worker.review.ingest import content_key, ingest, is_sampled
from moderation_worker.review.models import IngestReject, Item, Verdict
from moderation_worker.review.store import transaction
from tests.review.factories import record, verdict


def _ingest(sessions, *records, sample_rate=0.0):
    with transaction(sessions) as session:
        return ingest(session, records, sample_rate=sample_rate)


def _count(sessions, model, *where) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_a_redelivered_verdict_is_stored_once(sessions):
    flagged = verdict("e1", content_id="c1", triggered={"weapons": 0.9})
    first = _ingest(sessions, record(flagged, offset=0))
    again = _ingest(sessions, record(flagged, offset=0), record(flagged, offset=0))
    assert (first.stored, again.stored, again.duplicates) == (1, 0, 2)
    assert _count(sessions, Verdict) == 1 and _count(sessions, Item) == 1


def test_newer_verdicts_of_open_content_attach_to_its_one_item_with_the_strictest_decision(sessions):
    # Given a review verdict, then a block verdict of the same content, then one of the same image bytes
    _ingest(
        sessions,
        record(verdict("e1", content_id="c1", triggered={"weapons": 0.9})),
        record(verdict("e2", content_id="c1", image=b"other", triggered={"hate_symbols": 0.95})),
        record(verdict("e3", content_id="c2", triggered={"drugs": 0.8})),
    )

    with transaction(sessions) as session:
        items = session.scalars(select(Item).order_by(Item.id)).all()
        # I expect one item per content: c1 holds both of its verdicts, at block and critical
        assert [(i.content_id, i.decision, i.severity) for i in items] == [
            ("c1", "block", "critical"),
            ("c2", "review", "medium"),
        ]
        c1 = items[0]
        assert session.scalar(select(func.count()).where(Verdict.item_id == c1.id)) == 2
        assert c1.content_key == content_key("t1", "c1", c1.sha256)


def test_content_without_a_content_id_is_one_item_per_image(sessions):
    _ingest(
        sessions,
        record(verdict("a", content_id=None, image=b"same", triggered={"weapons": 0.9})),
        record(verdict("b", content_id=None, image=b"same", triggered={"drugs": 0.9})),
        record(verdict("c", content_id=None, image=b"different", triggered={"drugs": 0.9})),
    )
    assert _count(sessions, Item) == 2


def _decide(sessions, content_id: str, outcome: str) -> None:
    with transaction(sessions) as session:
        item = session.scalars(select(Item).where(Item.content_id == content_id, Item.status == "open")).one()
        item.status, item.outcome = "decided", outcome
        from moderation_worker.review.models import utcnow

        item.decided_at = utcnow()


def test_a_verdict_of_decided_content_is_history_unless_it_is_stricter_than_the_outcome(sessions):
    _ingest(sessions, record(verdict("r1", content_id="kept", triggered={"weapons": 0.9})))
    _ingest(sessions, record(verdict("o1", content_id="allowed", triggered={"weapons": 0.9})))
    _decide(sessions, "kept", "removed")
    _decide(sessions, "allowed", "allowed")

    # When the same content is flagged again, at block
    summary = _ingest(
        sessions,
        record(verdict("r2", content_id="kept", triggered={"hate_symbols": 0.95})),
        record(verdict("o2", content_id="allowed", triggered={"weapons": 0.9})),
    )

    # I expect the removed content's verdict kept in its history, and the allowed content back in the queue
    assert (summary.history_only, summary.opened) == (1, 1)
    with transaction(sessions) as session:
        open_items = session.scalars(select(Item.content_id).where(Item.status == "open")).all()
        assert open_items == ["allowed"]
        removed = session.scalars(select(Item).where(Item.content_id == "kept")).one()
        assert session.scalar(select(Verdict.item_id).where(Verdict.event_id == "r2")) == removed.id


def test_a_share_of_allow_verdicts_from_the_results_topic_becomes_the_sample_queue(sessions):
    allows = [verdict(f"allow-{n}", content_id=f"c{n}") for n in range(400)]
    flagged = verdict("flagged-in-results", content_id="f", triggered={"weapons": 0.9})
    summary = _ingest(sessions, *(record(v, kind="results") for v in [*allows, flagged]), sample_rate=0.25)

    expected = sum(is_sampled(v.event_id, 0.25) for v in allows)
    assert 60 < expected < 140  # about a quarter
    assert summary.stored == expected  # and the flagged one is left to the review topic
    assert _count(sessions, Item, Item.queue == "sample") == expected
    again = _ingest(sessions, *(record(v, kind="results") for v in allows), sample_rate=0.25)
    assert again.stored == 0 and again.duplicates == expected  # the same choice on redelivery


def test_a_record_that_is_not_a_verdict_is_kept_as_a_reject(sessions):
    summary = _ingest(sessions, record(b"{not a verdict", offset=7), record(b"", offset=8))
    assert summary.rejected == 2
    with transaction(sessions) as session:
        rejects = session.scalars(select(IngestReject).order_by(IngestReject.offset)).all()
        assert [(r.offset, r.value) for r in rejects] == [(7, b"{not a verdict"), (8, b"")]


def test_two_ingesters_storing_the_same_batch_store_each_verdict_once(sessions):
    # Given two replicas handed the same records (a rebalance redelivers to another member)
    batch = [
        record(verdict(f"e{n}", content_id=f"c{n % 5}", triggered={"weapons": 0.9}), offset=n)
        for n in range(40)
    ]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def replica() -> None:
        start.wait()
        for _attempt in range(5):  # the loser of a race retries its transaction, as the ingester does
            try:
                _ingest(sessions, *batch)
                return
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # I expect every verdict once and one open item per content
    assert _count(sessions, Verdict) == 40
    assert _count(sessions, Item, Item.status == "open") == 5
