"""Backoff for partitions whose events hit infrastructure failures.

A partition with a failed event is held back (so the worker keeps polling, heartbeating and holding
its partitions instead of blocking past ``max.poll.interval.ms``) and resumed after an exponential
backoff with full jitter, capped. Success on a partition resets its backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass


@dataclass
class _Hold:
    resume_at: float
    offset: int  # where the partition resumes: its first failed record


class PartitionBackoff:
    def __init__(
        self,
        *,
        initial_s: float,
        max_s: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._initial = initial_s
        self._max = max_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._held: dict[Hashable, _Hold] = {}
        self._failures: dict[Hashable, int] = {}

    def fail(self, partition: Hashable, offset: int) -> float:
        """Hold ``partition`` at ``offset`` after a failure; returns the delay before it is retried."""
        failures = self._failures.get(partition, 0) + 1
        self._failures[partition] = failures
        ceiling = min(self._max, self._initial * 2 ** (failures - 1))
        # Full jitter spreads the retries of many workers hitting one recovering S3; keep a floor so
        # a run of failures never degenerates into a hot loop.
        delay = max(self._initial / 2, self._rng.uniform(0, ceiling))
        self._held[partition] = _Hold(self._clock() + delay, offset)
        return delay

    def succeed(self, partition: Hashable) -> None:
        self._failures.pop(partition, None)

    def due(self) -> list[Hashable]:
        """Held partitions whose backoff is over; they are released."""
        now = self._clock()
        ready = [p for p, hold in self._held.items() if hold.resume_at <= now]
        for partition in ready:
            del self._held[partition]
        return ready

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop partitions this worker no longer owns (after a rebalance)."""
        for partition in partitions:
            self._held.pop(partition, None)
            self._failures.pop(partition, None)

    @property
    def held(self) -> dict[Hashable, int]:
        """Partitions backing off, with the offset each resumes from."""
        return {partition: hold.offset for partition, hold in self._held.items()}
