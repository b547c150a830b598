import random

from moderation_worker.errors import ErrorCode, RetriesExhaustedError, StorageUnavailableError
from moderation_worker.retry import ObjectRetries, PartitionBackoff


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_partition_is_held_until_its_backoff_is_over():
    clock = _Clock()
    backoff = PartitionBackoff(initial_s=1.0, max_s=8.0, clock=clock, rng=random.Random(1))
    delay = backoff.fail("p0", 7)
    assert backoff.held == {"p0": 7}
    assert backoff.due() == []
    clock.now = delay + 0.001
    assert backoff.due() == ["p0"]
    assert backoff.held == {}


def test_backoff_grows_exponentially_up_to_the_cap_and_resets_on_success():
    clock = _Clock()
    backoff = PartitionBackoff(initial_s=1.0, max_s=8.0, clock=clock, rng=random.Random(7))
    for _ in range(6):
        delay = backoff.fail("p", 0)
        assert 0.5 <= delay <= 8.0
    assert backoff._failures["p"] == 6
    backoff.succeed("p")
    # After success the next delay is bounded by the initial backoff again.
    assert backoff.fail("p", 0) <= 1.0


def test_revoked_partitions_are_forgotten():
    backoff = PartitionBackoff(initial_s=1.0, max_s=2.0, clock=_Clock())
    backoff.fail("a", 1)
    backoff.fail("b", 2)
    backoff.forget(["a"])
    assert backoff.held == {"b": 2}


def test_an_object_failing_while_others_succeed_is_final_at_the_bounded_attempt():
    clock = _Clock()
    clock.now = 100.0
    retries = ObjectRetries(max_attempts=3, clock=clock)
    error = StorageUnavailableError("S3 error InternalError")
    assert retries.failed("s3://b/bad", error) is None
    clock.now += 1
    retries.succeeded("s3://b/good")  # the store serves another object after the first failure
    assert retries.failed("s3://b/bad", error) is None
    final = retries.failed("s3://b/bad", error)
    assert isinstance(final, RetriesExhaustedError) and final.code is ErrorCode.RETRIES_EXHAUSTED
    assert final.attempts == 3 and "failed 3 times" in final.message and "InternalError" in final.message


def test_an_outage_is_never_final_however_many_attempts():
    # Given nothing served since the object first failed, and a probe that finds the store down
    probes: list[str] = []
    retries = ObjectRetries(max_attempts=2, probe=lambda url: probes.append(url) or False, clock=_Clock())
    for _ in range(50):
        assert retries.failed("s3://b/x", StorageUnavailableError("unreachable")) is None
    assert probes  # it asked
    assert len(probes) == 1  # and asked again only after the probe interval, not on every failure


def test_a_success_before_the_first_failure_is_no_evidence_but_a_probe_is():
    clock = _Clock()
    answers = [True]
    retries = ObjectRetries(max_attempts=2, probe=lambda url: answers[0], clock=clock)
    retries.succeeded("s3://b/old")  # before the failure: says nothing about now
    clock.now += 1
    assert retries.failed("s3://b/x", StorageUnavailableError("e")) is None
    assert isinstance(retries.failed("s3://b/x", StorageUnavailableError("e")), RetriesExhaustedError)


def test_success_of_the_object_resets_its_count_and_tracking_is_bounded():
    clock = _Clock()
    clock.now = 100.0
    retries = ObjectRetries(max_attempts=2, max_tracked=3, clock=clock)
    retries.failed("s3://b/x", StorageUnavailableError("e"))
    retries.succeeded("s3://b/x")
    clock.now += 1
    retries.succeeded("s3://b/other")
    assert retries.failed("s3://b/x", StorageUnavailableError("e")) is None  # counting starts again
    for n in range(10):
        retries.failed(f"s3://b/{n}", StorageUnavailableError("e"))
    assert len(retries._failing) == 3
