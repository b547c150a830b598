"""Retries of infrastructure failures: per-partition backoff, and the bound on one failing object.

A partition with a failed event is held back (so the worker keeps polling, heartbeating and holding
its partitions instead of blocking past ``max.poll.interval.ms``) and resumed after an exponential
backoff with full jitter, capped. Success on a partition resets its backoff. ``ObjectRetries`` decides
when a failure that repeats for one object, while the store serves the others, is final.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from moderation_worker.errors import PermanentError, RetriesExhaustedError


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


class ObjectRetries:
    """Ends a transient failure that keeps repeating for one object while the store serves others.

    Retrying forever is right for an outage: every object fails, nothing is the event's fault, and
    dead-lettering would lose good events. It is wrong for one object the store always fails (a key
    it answers 500 for, or trickles) while serving the rest: that object holds its partition for good.
    The evidence that the store is serving is a successful fetch of another object since this one
    first failed (from any partition), or, when there is none, a probe of the store that succeeds.
    With that evidence, the object's ``max_attempts``-th failure is final: ``retries_exhausted``.

    Thread-safe (fetches run on a pool). Bounded: at most ``max_tracked`` failing objects are
    remembered (the oldest forgotten first), so hostile input cannot grow it.
    """

    def __init__(
        self,
        *,
        max_attempts: int,
        probe: Callable[[str], bool] | None = None,  # url -> whether its store serves requests now
        probe_interval_s: float = 5.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._max_attempts = max_attempts
        self._probe = probe
        self._probe_interval_s = probe_interval_s
        self._max_tracked = max_tracked
        self._clock = clock
        self._lock = threading.Lock()
        self._failing: OrderedDict[str, _Failing] = OrderedDict()
        self._last_served = float("-inf")  # when the store last served an object (or passed a probe)
        self._last_probe = float("-inf")

    @property
    def max_attempts(self) -> int:
        return self._max_attempts

    def succeeded(self, url: str) -> None:
        """A fetch of ``url`` succeeded: the store is serving, and this object is not failing."""
        with self._lock:
            self._last_served = self._clock()
            self._failing.pop(url, None)

    def failed(self, url: str, error: Exception) -> PermanentError | None:
        """Count a transient failure of ``url``; the dead-letter error if it is now final, else None."""
        now = self._clock()
        with self._lock:
            failing = self._failing.pop(url, None) or _Failing(first_at=now)
            failing.attempts += 1
            self._failing[url] = failing
            while len(self._failing) > self._max_tracked:
                self._failing.popitem(last=False)
            if failing.attempts < self._max_attempts:
                return None
            served = self._last_served > failing.first_at
            probe = (
                not served and self._probe is not None and now - self._last_probe >= self._probe_interval_s
            )
            if probe:
                self._last_probe = now
        if probe and self._probe is not None and self._probe(url):  # outside the lock: it does I/O
            with self._lock:
                self._last_served = max(self._last_served, self._clock())
            served = True
        if not served:
            return None  # the store serves nothing else either: an outage, held and retried
        with self._lock:
            self._failing.pop(url, None)
        return RetriesExhaustedError(
            f"{url} failed {failing.attempts} times while the store served other requests; "
            f"last error: {error}",
            attempts=failing.attempts,
        )


@dataclass
class _Failing:
    first_at: float
    attempts: int = 0
