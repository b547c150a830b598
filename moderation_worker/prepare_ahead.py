"""A batch polled and handed to the background thread to prepare, until the loop finishes it.

With ``prepare_ahead`` the worker holds at most two batches: the one it finishes (scores, publishes,
commits) and this one, being parsed, fetched and decoded meanwhile. Partitions rewound or revoked
while it waits are marked stale: their records here are no longer the next ones the worker will
process, so they are left out when it is taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from kafka import TopicPartition

from moderation_worker.offsets import partition_of
from moderation_worker.outcomes import InboundRecord
from moderation_worker.pipeline import PreparedBatch


@dataclass
class PreparedAhead:
    """A polled batch whose ``prepare`` runs, or ran, on the background thread. Loop thread only.

    ``stale`` collects the partitions rewound or revoked since the poll: their records here are no
    longer the next ones this worker will process, so ``take`` leaves them out."""

    records: list[InboundRecord]
    polled_at: float  # perf_counter() at the poll: the 'batch' stage runs from here to the commit
    future: Future[PreparedBatch]
    stale: set[TopicPartition] = field(default_factory=set)

    @property
    def live_count(self) -> int:
        return sum(1 for record in self.records if partition_of(record) not in self.stale)

    def mark_stale(self, partitions: Iterable[TopicPartition]) -> int:
        """Leaves the partitions' records out from now on; returns how many that drops."""
        before = self.live_count
        self.stale.update(partitions)
        return before - self.live_count

    def take(self) -> PreparedBatch:
        """Waits for the prepare, re-raising what it raised, and returns it less the stale records."""
        prepared = self.future.result()
        return prepared.keeping(lambda record: partition_of(record) not in self.stale)

    def failure(self) -> BaseException | None:
        """What the prepare raised, once it is over (None if it succeeded or never ran)."""
        return None if self.future.cancelled() else self.future.exception()
