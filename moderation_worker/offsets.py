"""Where a batch's partitions stand after it: which outcomes are final, where each partition rewinds to,
and what may be committed. Pure functions of the batch, so the loop's delivery rules read in one place.

Also the one conversion from the Kafka client's records to ours (``inbound``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka import TopicPartition

from moderation_worker.kafka_records import damage_of
from moderation_worker.outcomes import InboundRecord, Outcome, OutcomeKind


def partition_of(record: InboundRecord) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def inbound(record) -> InboundRecord:
    """A kafka-python ConsumerRecord as our InboundRecord; one the client could not parse carries its
    damage (see kafka_records) and a timestamp only when one was read."""
    damage = damage_of(record)
    timestamp = record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
    return InboundRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple((k, v) for k, v in (record.headers or [])),
        timestamp_ms=timestamp,
        damage=damage.reason if damage is not None else None,
    )


@dataclass(frozen=True)
class Split:
    """A finished batch divided: ``final`` outcomes to publish, and per rewound partition the retry
    outcome it rewinds to (its offset, and the error that caused it)."""

    final: list[Outcome]
    retries: dict[TopicPartition, Outcome]

    @property
    def rewind_to(self) -> dict[TopicPartition, int]:
        return {tp: outcome.record.offset for tp, outcome in self.retries.items()}


def split_at_first_retry(outcomes: list[Outcome]) -> Split:
    """Per partition, the outcomes before its first retry are final; from there it is rewound.

    Later records of a rewound partition are dropped even if they succeeded, so that results for one
    key keep their order; they are reprocessed after the backoff.
    """
    retries: dict[TopicPartition, Outcome] = {}
    final: list[Outcome] = []
    for outcome in outcomes:  # sorted by partition, then offset
        tp = partition_of(outcome.record)
        if tp in retries:
            continue
        if outcome.kind is OutcomeKind.RETRY:
            retries[tp] = outcome
        else:
            final.append(outcome)
    return Split(final, retries)


def first_offsets(records: list[InboundRecord]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = partition_of(record)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    return first


def next_offsets(records: list[InboundRecord]) -> dict[TopicPartition, int]:
    nxt: dict[TopicPartition, int] = {}
    for record in records:
        tp = partition_of(record)
        nxt[tp] = max(nxt.get(tp, 0), record.offset + 1)
    return nxt


def commit_offsets(
    records: list[InboundRecord], rewind_to: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The offset to commit per partition: past its last record, or at its rewind point; only where
    that moves past the batch's first record (nothing of a partition rewound to its start)."""
    first = first_offsets(records)
    offsets: dict[TopicPartition, int] = {}
    for tp, next_offset in next_offsets(records).items():
        committed = rewind_to.get(tp, next_offset)
        if committed > first[tp]:
            offsets[tp] = committed
    return offsets
