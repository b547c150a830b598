import random

from moderation_worker.retry import PartitionBackoff


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
