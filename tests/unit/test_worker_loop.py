"""The loop's delivery rules, with an in-memory consumer and producer.

Most rules are checked in both modes: with prepare-ahead (the default: batch N+1 is fetched and
decoded on a background thread while batch N is scored) and without. The integration tests run the
same rules against a real broker."""

from __future__ import annotations

import io
import json
import threading
from collections import defaultdict
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from PIL import Image

import moderation_worker.pipeline as pipeline_module
from moderation_worker.cache import BoundedLRUCache
from moderation_worker.errors import TransientError
from moderation_worker.fetch import FetchedObject, S3Location, parse_s3_url
from moderation_worker.health import HealthState
from moderation_worker.kafka_records import RecordDamage
from moderation_worker.metrics import WorkerMetrics
from moderation_worker.model.fake import FakeScorer
from moderation_worker.pipeline import ImageLimits, Pipeline
from moderation_worker.policies import Action, Calibration, Policy, PolicyPack
from moderation_worker.publish import OutcomePublisher, Topics
from moderation_worker.retry import PartitionBackoff
from moderation_worker.worker import StopConditions, Worker

TOPIC = "requests"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeConsumer:
    """Enough of KafkaConsumer: partitions with positions, seek, commits, one assignment."""

    def __init__(self, records_by_partition: dict[int, list[bytes]], clock: FakeClock) -> None:
        self.log = {TopicPartition(TOPIC, p): values for p, values in records_by_partition.items()}
        self.position_of = {tp: 0 for tp in self.log}
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.closed = False
        self.listener = None
        self.rebalance_listener = None
        self.clock = clock

    def subscribe(self, topics, listener=None):
        self.listener = self.rebalance_listener = listener

    def revoke(self, partitions: set[TopicPartition]) -> None:
        """A rebalance inside poll(): the worker hears of it and the partitions go to another member."""
        self.rebalance_listener.on_partitions_revoked(set(partitions))
        for tp in partitions:
            del self.log[tp], self.position_of[tp]

    def assignment(self):
        return set(self.log)

    def poll(self, timeout_ms=0, max_records=None):
        if max_records is not None and max_records <= 0:
            raise ValueError("max_records must be positive")  # as KafkaConsumer.poll
        if self.listener is not None:
            self.listener.on_partitions_assigned(set(self.log))
            self.listener = None
        self.clock.now += timeout_ms / 1000  # time passes while polling
        out: dict[TopicPartition, list] = {}
        budget = max_records
        for tp, values in sorted(self.log.items()):
            batch = []
            while self.position_of[tp] < len(values) and budget > 0:
                offset = self.position_of[tp]
                batch.append(
                    SimpleNamespace(
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=offset,
                        key=f"k{offset}".encode(),
                        value=values[offset],
                        headers=[],
                        timestamp=0,
                    )
                )
                self.position_of[tp] += 1
                budget -= 1
            if batch:
                out[tp] = batch
        return out

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))
        self.position_of[tp] = offset

    def metrics(self):
        return {"consumer-metrics": {"connection-count": 1.0}}

    def highwater(self, tp):
        return len(self.log[tp])

    def position(self, tp):
        return self.position_of[tp]

    def commit(self, offsets):
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def close(self, autocommit=True):
        assert autocommit is False
        self.closed = True

    def committed(self, tp) -> int:
        return max((c[tp] for c in self.commits if tp in c), default=0)


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout=None):
        if self.error is not None:
            raise self.error


class FakeProducer:
    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes | None, bytes | None, list]]] = defaultdict(list)
        self.fail_next_flushes = 0

    def send(self, topic, key=None, value=None, headers=None):
        failing = self.fail_next_flushes > 0
        if not failing:
            self.sent[topic].append((key, value, headers or []))
        return FakeFuture(KafkaTimeoutError("no ack") if failing else None)

    def flush(self, timeout=None):
        if self.fail_next_flushes > 0:
            self.fail_next_flushes -= 1


class FakeFetcher:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.failures: dict[str, int] = {}  # url -> how many more fetches fail transiently
        self.fetched: list[str] = []

    def fetch(self, url: str) -> FetchedObject:
        location = parse_s3_url(url)
        self.fetched.append(url)
        if self.failures.get(url, 0) > 0:
            self.failures[url] -= 1
            raise TransientError("S3 unreachable (simulated)")
        return FetchedObject(S3Location(location.bucket, location.key), self.objects[url], None, None)


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _pack() -> PolicyPack:
    def policy(pid: str, action: Action) -> Policy:
        return Policy(
            id=pid,
            title=pid,
            version=1,
            rule="r",
            question="q?",
            threshold=0.5,
            action=action,
            severity="high",
            calibration=Calibration(),
        )

    return PolicyPack(
        name="t",
        version="1",
        instructions="i",
        policies=[policy("alpha", Action.REVIEW), policy("beta", Action.BLOCK)],
    )


def _event(n: int, url: str | None = None) -> bytes:
    return json.dumps({"event_id": f"e{n}", "image_url": url or f"s3://bucket/img{n % 3}.png"}).encode()


def _world(
    records: dict[int, list[bytes]],
    *,
    stop: StopConditions | None = None,
    prepare_ahead: bool = True,
    batch_size: int = 4,
):
    clock = FakeClock()
    consumer = FakeConsumer(records, clock)
    producer = FakeProducer()
    fetcher = FakeFetcher({f"s3://bucket/img{i}.png": _png((i * 80, 10, 10)) for i in range(3)})
    scorer = FakeScorer()
    pipeline = Pipeline(
        fetcher=fetcher,
        scorer=scorer,
        pack=_pack(),
        limits=ImageLimits(max_pixels=10**7, max_edge=64, allowed_formats=frozenset({"PNG"})),
        worker_id="w1",
        verdict_cache=BoundedLRUCache(100),
        fetch_concurrency=2,
    )
    worker = Worker(
        consumer=consumer,
        publisher=OutcomePublisher(
            producer=producer, topics=Topics("results", "review", "dlq"), worker_id="w1", delivery_timeout_s=1
        ),
        pipeline=pipeline,
        input_topic=TOPIC,
        batch_size=batch_size,
        poll_timeout_ms=100,
        prepare_ahead=prepare_ahead,
        backoff=PartitionBackoff(initial_s=1.0, max_s=4.0, clock=clock),
        metrics=WorkerMetrics(),
        health=HealthState(stall_after_s=60),
        stop=stop or StopConditions(idle_timeout_s=30),
        clock=clock,
        sleep=clock.advance,
    )
    return SimpleNamespace(
        worker=worker, consumer=consumer, producer=producer, fetcher=fetcher, scorer=scorer
    )


def _event_ids(sent: list) -> list[str]:
    return [json.loads(value)["event_id"] for _key, value, _headers in sent]


BOTH_MODES = pytest.mark.parametrize("prepare_ahead", [True, False], ids=["ahead", "in_turn"])
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def _offsets(records) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in records]


def _trace(world, *, on_prepare=None, on_finish=None) -> list[tuple[str, object, str]]:
    """Records (step, what, thread) for each poll with records, prepare, finish and commit.

    ``on_prepare(n)`` / ``on_finish(n)`` run before the n-th (from 0) prepare / finish: the hooks
    tests use to hold a stage until another has reached a point."""
    steps: list[tuple[str, object, str]] = []
    consumer, pipeline = world.consumer, world.worker._pipeline
    poll, commit, prepare, finish = consumer.poll, consumer.commit, pipeline.prepare, pipeline.finish

    def step(name: str, what: object) -> None:
        steps.append((name, what, threading.current_thread().name))

    def traced_poll(timeout_ms=0, max_records=None):
        polled = poll(timeout_ms, max_records)
        if polled:
            step("poll", [(r.partition, r.offset) for batch in polled.values() for r in batch])
        return polled

    def traced_commit(offsets):
        step("commit", {tp.partition: meta.offset for tp, meta in offsets.items()})
        commit(offsets)

    def traced_prepare(records):
        n = sum(1 for s in steps if s[0] == "prepare")
        step("prepare", _offsets(records))
        if on_prepare is not None:
            on_prepare(n)
        return prepare(records)

    def traced_finish(prepared):
        n = sum(1 for s in steps if s[0] == "finish")
        if on_finish is not None:
            on_finish(n)
        step("finish", _offsets(prepared.records))
        return finish(prepared)

    consumer.poll, consumer.commit = traced_poll, traced_commit
    pipeline.prepare, pipeline.finish = traced_prepare, traced_finish
    return steps


def _on_loop_thread(steps) -> list[tuple[str, object]]:
    loop = threading.current_thread().name  # the tests call run() on this thread
    return [(name, what) for name, what, thread in steps if thread == loop]


def _of(steps, name: str) -> list:
    return [what for step, what, _thread in steps if step == name]


def _p0(offsets) -> list[tuple[int, int]]:
    return [(0, o) for o in offsets]


@BOTH_MODES
def test_every_record_is_published_once_and_offsets_committed_past_the_last(prepare_ahead):
    world = _world(
        {0: [_event(n) for n in range(5)], 1: [_event(n) for n in range(5, 9)]}, prepare_ahead=prepare_ahead
    )
    summary = world.worker.run()
    assert summary.results == 9
    assert sorted(_event_ids(world.producer.sent["results"])) == sorted(f"e{n}" for n in range(9))
    assert world.consumer.committed(TopicPartition(TOPIC, 0)) == 5
    assert world.consumer.committed(TopicPartition(TOPIC, 1)) == 4
    assert world.consumer.closed


def test_results_keep_the_input_key_and_flagged_ones_also_go_to_review():
    world = _world({0: [_event(n) for n in range(6)]})
    world.worker.run()
    results = world.producer.sent["results"]
    assert [key for key, _v, _h in results] == [f"k{n}".encode() for n in range(6)]
    flagged = [
        eid
        for (_k, v, _h), eid in zip(results, _event_ids(results), strict=True)
        if json.loads(v)["decision"] != "allow"
    ]
    assert flagged, "the hash scorer should flag some of six events at threshold 0.5"
    assert _event_ids(world.producer.sent["review"]) == flagged


@BOTH_MODES
def test_a_transient_fetch_failure_rewinds_only_its_partition_and_nothing_is_dead_lettered(prepare_ahead):
    records = {
        0: [
            _event(0, "s3://bucket/img0.png"),
            _event(1, "s3://bucket/img1.png"),
            _event(2, "s3://bucket/img2.png"),
        ],
        1: [_event(3, "s3://bucket/img0.png")],
    }
    world = _world(records, prepare_ahead=prepare_ahead)
    world.fetcher.failures["s3://bucket/img1.png"] = 3  # offset 1 of partition 0 fails three times
    summary = world.worker.run()
    p0 = TopicPartition(TOPIC, 0)
    assert summary.retries == 3
    assert world.producer.sent["dlq"] == []
    # Each event published exactly once, in offset order for partition 0 despite the failures.
    assert _event_ids(world.producer.sent["results"]).count("e2") == 1
    p0_order = [e for e in _event_ids(world.producer.sent["results"]) if e in {"e0", "e1", "e2"}]
    assert p0_order == ["e0", "e1", "e2"]
    # The first commit of partition 0 stopped at the failed record.
    assert world.consumer.commits[0][p0] == 1
    assert (p0, 1) in world.consumer.seeks
    assert world.consumer.committed(p0) == 3


@BOTH_MODES
def test_a_batch_the_broker_did_not_acknowledge_is_not_committed_and_is_redone(prepare_ahead):
    world = _world({0: [_event(n) for n in range(3)]}, prepare_ahead=prepare_ahead)
    world.producer.fail_next_flushes = 1
    summary = world.worker.run()
    assert world.consumer.commits[0][TopicPartition(TOPIC, 0)] == 3  # only after the successful retry
    assert len(world.consumer.commits) == 1
    assert sorted(_event_ids(world.producer.sent["results"])) == ["e0", "e1", "e2"]
    assert summary.results == 3


def test_a_bad_event_is_dead_lettered_with_its_original_bytes_and_origin():
    bad = b'{"event_id": "x1"}'
    world = _world({0: [_event(0), bad, _event(2)]})
    world.worker.run()
    ((key, value, headers),) = world.producer.sent["dlq"]
    assert value == bad and key == b"k1"
    header = {k: v.decode() for k, v in headers}
    assert header["dlq.error.code"] == "invalid_event"
    assert "image_url: Field required" in header["dlq.error.message"]
    assert (
        header["dlq.original.topic"],
        header["dlq.original.partition"],
        header["dlq.original.offset"],
    ) == (TOPIC, "0", "1")
    assert header["dlq.event_id"] == "x1"
    assert header["dlq.attempts"] == "1"


def test_a_dead_letter_counts_the_transient_failures_before_it():
    world = _world({0: [_event(0, "s3://bucket/report.pdf")]})
    world.fetcher.objects["s3://bucket/report.pdf"] = b"%PDF-1.7 not an image"
    world.fetcher.failures["s3://bucket/report.pdf"] = 2
    world.worker.run()
    ((_key, _value, headers),) = world.producer.sent["dlq"]
    header = {k: v.decode() for k, v in headers}
    assert header["dlq.error.code"] == "not_an_image"
    assert header["dlq.attempts"] == "3"


def test_records_no_client_could_copy_as_they_are_are_still_dead_lettered():
    # Given a record with neither key nor value and a header whose value is null (a tombstone)
    world = _world({0: [_event(0)]})
    world.consumer.log[TopicPartition(TOPIC, 0)].append(None)
    original_poll = world.consumer.poll

    def poll(timeout_ms=0, max_records=None):
        out = original_poll(timeout_ms, max_records)
        for batch in out.values():
            for record in batch:
                if record.value is None:
                    record.key, record.headers = None, [("trace", None)]
        return out

    world.consumer.poll = poll
    world.worker.run()
    ((key, value, headers),) = world.producer.sent["dlq"]
    header = dict(headers)
    assert key is None and value == b""
    assert header["trace"] == b"" and header["dlq.original.value_null"] == b"true"
    assert header["dlq.error.code"] == b"invalid_json"


def test_an_original_too_large_to_copy_is_dead_lettered_without_its_value():
    world = _world({0: [b"{" + b" " * 2_000_000]})
    world.worker.run()
    ((key, value, headers),) = world.producer.sent["dlq"]
    header = dict(headers)
    assert value is None and key == b"k0"
    assert header["dlq.original.value_omitted_bytes"] == b"2000001"


def test_fetches_slower_than_the_batch_budget_are_retried_not_dead_lettered():
    world = _world({0: [_event(0, "s3://bucket/img1.png")]}, stop=StopConditions(max_events=1))
    world.worker._pipeline._fetch_timeout_s = 0.05
    slow = {"left": 1}
    fetch = world.fetcher.fetch

    def slow_once(url):
        if slow["left"]:
            slow["left"] -= 1
            threading.Event().wait(0.5)
        return fetch(url)

    world.fetcher.fetch = slow_once
    summary = world.worker.run()
    assert summary.retries == 1 and summary.results == 1
    assert world.producer.sent["dlq"] == []


def test_a_repeated_image_is_served_from_the_verdict_cache():
    world = _world(
        {
            0: [_event(0, "s3://bucket/img0.png") for _ in range(1)]
            + [
                json.dumps({"event_id": f"r{n}", "image_url": "s3://bucket/img0.png"}).encode()
                for n in range(5)
            ]
        }
    )
    world.worker.run()
    results = [json.loads(v) for _k, v, _h in world.producer.sent["results"]]
    # The first batch (4 records) scores the image once for all four; later batches hit the cache.
    assert [r["cache"]["verdict"] for r in results] == [False] * 4 + [True] * 2
    assert world.scorer.images_scored == 1
    assert len({json.dumps(r["policies"]) for r in results}) == 1


@BOTH_MODES
def test_it_stops_after_max_events_without_reading_past_them(prepare_ahead):
    world = _world(
        {0: [_event(n) for n in range(10)]}, stop=StopConditions(max_events=6), prepare_ahead=prepare_ahead
    )
    summary = world.worker.run()
    assert summary.events == 6
    assert _event_ids(world.producer.sent["results"]) == [f"e{n}" for n in range(6)]
    assert world.consumer.committed(P0) == 6
    # With a batch prepared ahead the poll for the next one counts it: no record past the sixth is read.
    assert world.consumer.position(P0) == 6


def test_idle_time_counts_from_run_not_from_construction():
    world = _world({0: [_event(n) for n in range(3)]}, stop=StopConditions(idle_timeout_s=5))
    world.consumer.clock.advance(60)  # the worker was built long before it ran
    summary = world.worker.run()
    assert summary.results == 3


@pytest.mark.parametrize("failures", [1, 5])
def test_idle_timeout_waits_for_partitions_still_backing_off(failures):
    world = _world({0: [_event(0, "s3://bucket/img1.png")]}, stop=StopConditions(idle_timeout_s=0.5))
    world.fetcher.failures["s3://bucket/img1.png"] = failures
    summary = world.worker.run()
    assert summary.results == 1
    assert summary.retries == failures


# --- prepare-ahead: batch N+1 is fetched and decoded while batch N is scored -------------------------


def test_the_next_batch_is_prepared_while_the_current_one_is_finished():
    world = _world({0: [_event(n) for n in range(8)]})
    second_prepare_began = threading.Event()
    waited = []

    def on_prepare(n):
        if n == 1:
            second_prepare_began.set()

    def on_finish(n):
        if n == 0:
            # Batch 1 is not finished until batch 2's prepare has begun: without overlap this would
            # wait in vain (the timeout only keeps a broken build from hanging).
            waited.append(second_prepare_began.wait(timeout=30))

    steps = _trace(world, on_prepare=on_prepare, on_finish=on_finish)
    summary = world.worker.run()
    assert waited == [True]
    # The loop thread polls batch 2 before finishing batch 1; prepares run on the background thread.
    assert _on_loop_thread(steps) == [
        ("poll", _p0(range(4))),
        ("poll", _p0(range(4, 8))),
        ("finish", _p0(range(4))),
        ("commit", {0: 4}),
        ("finish", _p0(range(4, 8))),
        ("commit", {0: 8}),
    ]
    assert {thread for step, _what, thread in steps if step == "prepare"} == {"prepare_0"}
    assert summary.results == 8
    assert _event_ids(world.producer.sent["results"]) == [f"e{n}" for n in range(8)]


def test_without_prepare_ahead_each_batch_is_polled_prepared_finished_and_committed_in_turn():
    world = _world({0: [_event(n) for n in range(8)]}, prepare_ahead=False)
    steps = _trace(world)
    world.worker.run()
    assert [(step, what) for step, what, _thread in steps] == [
        ("poll", _p0(range(4))),
        ("prepare", _p0(range(4))),
        ("finish", _p0(range(4))),
        ("commit", {0: 4}),
        ("poll", _p0(range(4, 8))),
        ("prepare", _p0(range(4, 8))),
        ("finish", _p0(range(4, 8))),
        ("commit", {0: 8}),
    ]
    assert _on_loop_thread(steps) == [(step, what) for step, what, _thread in steps]
    assert not [t for t in threading.enumerate() if t.name.startswith("prepare")]


def test_records_of_a_partition_held_after_a_batch_are_dropped_from_the_batch_prepared_ahead():
    # Batch 1 is offsets 0-3 of partition 0; batch 2, polled while batch 1 is finished, is offsets
    # 4-5 of partition 0 and 0-1 of partition 1. Offset 1 of partition 0 fails once, transiently.
    flaky = "s3://bucket/flaky.png"
    world = _world(
        {0: [_event(0), _event(1, flaky), *[_event(n) for n in range(2, 6)]], 1: [_event(6), _event(7)]}
    )
    world.fetcher.objects[flaky] = _png((1, 2, 3))
    world.fetcher.failures[flaky] = 1
    steps = _trace(world)
    summary = world.worker.run()

    assert _of(steps, "prepare")[1] == [(0, 4), (0, 5), (1, 0), (1, 1)]
    # Partition 0 was rewound to offset 1 while batch 2 waited: only partition 1 of it is finished.
    assert _of(steps, "finish")[:2] == [_p0(range(4)), [(1, 0), (1, 1)]]
    assert (P0, 1) in world.consumer.seeks
    # After the hold, every event is published exactly once, partition 0 in offset order.
    results = _event_ids(world.producer.sent["results"])
    assert sorted(results) == [f"e{n}" for n in range(8)]
    assert [e for e in results if e in {f"e{n}" for n in range(6)}] == [f"e{n}" for n in range(6)]
    assert summary.retries == 1 and world.producer.sent["dlq"] == []
    p0_commits = [c[P0] for c in world.consumer.commits if P0 in c]
    assert p0_commits[0] == 1 and p0_commits == sorted(p0_commits)
    assert world.consumer.committed(P0) == 6 and world.consumer.committed(P1) == 2


def test_a_batch_prepared_while_a_publish_failed_drops_the_rewound_partitions():
    world = _world({0: [_event(n) for n in range(8)]})
    world.producer.fail_next_flushes = 1  # batch 1 is not acknowledged: partition 0 goes back to 0
    steps = _trace(world)
    summary = world.worker.run()

    assert _of(steps, "prepare")[1] == _p0(range(4, 8))
    # Batch 2 held only partition 0: nothing of it is finished before batch 1 is redone.
    assert _of(steps, "finish")[:2] == [_p0(range(4)), _p0(range(4))]
    assert _event_ids(world.producer.sent["results"]) == [f"e{n}" for n in range(8)]
    assert world.consumer.commits == [{P0: 4}, {P0: 8}]
    assert summary.retries == 1


def test_records_of_partitions_revoked_while_prepared_are_dropped():
    # Batch 1 holds offsets 0-1 of both partitions; a rebalance in the next poll takes partition 1.
    world = _world({0: [_event(0), _event(1)], 1: [_event(2), _event(3)]})
    steps = _trace(world)
    poll, polls = world.consumer.poll, []

    def poll_with_rebalance(timeout_ms=0, max_records=None):
        polls.append(timeout_ms)
        if len(polls) == 2:
            world.consumer.revoke({P1})
        return poll(timeout_ms, max_records)

    world.consumer.poll = poll_with_rebalance
    summary = world.worker.run()

    assert _of(steps, "prepare")[0] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert _of(steps, "finish") == [[(0, 0), (0, 1)]]
    # Partition 1's records are its next owner's: not published, not committed here.
    assert _event_ids(world.producer.sent["results"]) == ["e0", "e1"]
    assert world.consumer.commits == [{P0: 2}]
    assert summary.partitions_revoked == 1 and summary.events == 2


def test_a_stop_finishes_the_batch_in_hand_and_drops_the_one_prepared_ahead():
    world = _world({0: [_event(n) for n in range(8)]})
    second_prepare_began = threading.Event()

    def on_prepare(n):
        if n == 1:
            second_prepare_began.set()

    def on_finish(n):
        if n == 0:  # a stop (SIGTERM) lands while batch 1 is scored and batch 2 is prepared
            second_prepare_began.wait(timeout=30)
            world.worker.request_stop()

    steps = _trace(world, on_prepare=on_prepare, on_finish=on_finish)
    summary = world.worker.run()

    assert _of(steps, "prepare") == [_p0(range(4)), _p0(range(4, 8))]
    assert _of(steps, "finish") == [_p0(range(4))]
    assert _event_ids(world.producer.sent["results"]) == ["e0", "e1", "e2", "e3"]
    assert world.consumer.commits == [{P0: 4}]  # batch 2 is left to the successor
    assert summary.events == 4 and world.consumer.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("prepare")]


@BOTH_MODES
def test_a_prepare_that_raises_stops_the_worker_with_its_error(prepare_ahead):
    world = _world({0: [_event(n) for n in range(8)]}, prepare_ahead=prepare_ahead)

    def broken(records):
        raise RuntimeError("a bug in prepare")

    world.worker._pipeline.prepare = broken
    with pytest.raises(RuntimeError, match="a bug in prepare"):
        world.worker.run()
    assert world.consumer.commits == [] and not any(world.producer.sent.values())
    assert world.consumer.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("prepare")]


def test_a_verdict_cache_hit_is_served_without_decoding_the_image_again(monkeypatch):
    # Given the same image bytes in two batches, and a count of decodes
    decodes = []
    real_decode = pipeline_module.decode_image

    def counting_decode(data, **kwargs):
        decodes.append(len(data))
        return real_decode(data, **kwargs)

    monkeypatch.setattr(pipeline_module, "decode_image", counting_decode)
    events = [_event(n, "s3://bucket/img0.png") for n in range(2)]
    world = _world({0: events}, batch_size=1, prepare_ahead=False)

    world.worker.run()

    # I expect one decode: the repeat is a verdict hit found from the bytes' digest, with the same facts
    first, second = (json.loads(v) for _k, v, _h in world.producer.sent["results"])
    assert [first["cache"]["verdict"], second["cache"]["verdict"]] == [False, True]
    assert len(decodes) == 1 and world.scorer.images_scored == 1
    assert second["image"] == {**first["image"], "url": second["image"]["url"]}
    assert "decode" not in second["timings_ms"] and "fetch" in second["timings_ms"]


def test_the_originals_own_dlq_headers_are_kept_renamed_so_only_the_workers_say_why():
    # Given a bad record that already carries dlq.* headers (a replayed dead letter, or a spoof)
    world = _world({0: [_event(0), b"{not json"]})
    original_poll = world.consumer.poll

    def poll(timeout_ms=0, max_records=None):
        out = original_poll(timeout_ms, max_records)
        for batch in out.values():
            for record in batch:
                if record.value == b"{not json":
                    record.headers = [("dlq.error.code", b"spoofed"), ("trace", b"t"), ("dlq.attempts", None)]
        return out

    world.consumer.poll = poll
    world.worker.run()
    ((_key, _value, headers),) = world.producer.sent["dlq"]

    # I expect one dlq.error.code, the worker's; the original's under dlq.original-header., and the rest
    assert [v for k, v in headers if k == "dlq.error.code"] == [b"invalid_json"]
    header = dict(headers)
    assert header["dlq.original-header.dlq.error.code"] == b"spoofed"
    assert header["dlq.original-header.dlq.attempts"] == b""
    assert header["trace"] == b"t" and header["dlq.attempts"] == b"1"


def test_a_record_the_client_could_not_parse_is_dead_lettered_as_corrupt_record_and_the_rest_flows():
    world = _world({0: [_event(0), b'{"event_id": "mangled"}', _event(2)]})
    original_poll = world.consumer.poll

    def poll(timeout_ms=0, max_records=None):
        out = original_poll(timeout_ms, max_records)
        for batch in out.values():
            for record in batch:
                if record.offset == 1:  # as kafka_records delivers a record it could not parse
                    record.checksum = RecordDamage("UnicodeDecodeError: invalid start byte")
        return out

    world.consumer.poll = poll
    summary = world.worker.run()
    assert summary.results == 2 and summary.dead_letter_codes == {"corrupt_record": 1}
    ((_key, value, headers),) = world.producer.sent["dlq"]
    header = {k: v.decode() for k, v in headers}
    assert value == b'{"event_id": "mangled"}' and header["dlq.event_id"] == "mangled"
    assert f"{TOPIC} partition 0 offset 1" in header["dlq.error.message"]
    assert world.consumer.committed(TopicPartition(TOPIC, 0)) == 3
