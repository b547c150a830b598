"""kafka-python's record parsing, made to survive any bytes a producer can write.

kafka-python 3.0.12 decodes every header key as strict UTF-8. A record whose header key is not UTF-8
(any producer can write one) makes its parser raise once; the generator that walks the partition's
fetched data is then dead but never drained, and ``poll()`` loops inside the fetcher for ever: every
partition of the worker stops, SIGTERM goes unanswered, and the record moves on to the next worker
that takes the partition. Java's client replaces bad bytes instead; we do the equivalent here.

Two small patches of kafka-python's internals, owned and tested here (``tests/unit/test_kafka_records``)
and installed once by :func:`install`, which refuses to start against a kafka-python whose internals
differ (so an upgrade cannot silently drop the protection):

1. **One record.** ``DefaultRecordBatch._read_msg`` (the parser of one v2 record) is wrapped: when a
   record cannot be parsed, it is skipped by its own length prefix and returned in its place as an
   :class:`UnreadableRecord` holding its offset, what could be read of it (key, value, headers with
   undecodable keys backslash-escaped) and why. The records before and after it are unaffected.
   When even the length prefix is unusable, nothing after it in that batch can be located: each
   remaining offset of the batch comes out as an unreadable record.
2. **Anything else** (a batch that fails its CRC or cannot be decompressed, a legacy message set that
   does not parse): ``PartitionRecords.take`` is wrapped so that a failure yields one unreadable record
   at the offset being read and moves the partition past it, instead of leaving the fetcher stuck.

Either way the consumer returns a normal ``ConsumerRecord`` whose ``checksum`` field (unused for v2
records) is a :class:`RecordDamage`: no byte a producer writes can forge a Python object, so
:func:`damage_of` is the only test the worker needs. The worker dead-letters such records with
``corrupt_record``, naming topic, partition and offset.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kafka.consumer import fetcher as kafka_fetcher
from kafka.errors import CorruptRecordError
from kafka.record import default_records
from kafka.record.util import decode_varint

from moderation_worker.errors import ConfigurationError

_installed = False
_install_lock = threading.Lock()


@dataclass(frozen=True)
class RecordDamage:
    """Why the Kafka client could not parse a record; carried in ``ConsumerRecord.checksum``."""

    reason: str


def damage_of(record: object) -> RecordDamage | None:
    """The damage of a consumed record that could not be parsed, or None for a normal record."""
    checksum = getattr(record, "checksum", None)
    return checksum if isinstance(checksum, RecordDamage) else None


class UnreadableRecord(default_records.DefaultRecord):
    """A v2 record that did not parse, in its place in the batch, with what could be read of it."""

    __slots__ = ("_damage",)

    def __init__(self, *, batch, offset, timestamp, key, value, headers, reason: str) -> None:
        super().__init__(0, offset, timestamp, batch.timestamp_type, key, value, headers)
        self._damage = RecordDamage(reason)

    @property
    def checksum(self) -> RecordDamage:  # type: ignore[override]
        return self._damage


def install() -> None:
    """Install both patches, once per process. ConfigurationError if kafka-python's internals differ."""
    global _installed
    with _install_lock:
        if _installed:
            return
        batch_class = default_records.DefaultRecordBatch
        partition_records = getattr(kafka_fetcher.Fetcher, "PartitionRecords", None)
        original_read = getattr(batch_class, "_read_msg", None)
        original_take = getattr(partition_records, "take", None)
        if original_read is None or original_take is None:
            raise ConfigurationError(
                "this kafka-python lacks the record-parsing internals moderation_worker.kafka_records "
                "patches (DefaultRecordBatch._read_msg, Fetcher.PartitionRecords.take): install the "
                "locked kafka-python, or port the patch"
            )

        def read_msg(self, decode_varint=decode_varint):
            start = self._pos
            try:
                return original_read(self, decode_varint)
            except (ValueError, IndexError, CorruptRecordError) as exc:
                return _salvage(self, start, exc)

        def take(self, n=None):
            try:
                return original_take(self, n)
            except Exception as exc:  # whatever the fetched bytes did to the parser: skip one offset
                return [_skip_one_offset(self, exc)]

        batch_class._read_msg = read_msg
        partition_records.take = take
        _installed = True


def _salvage(batch, start: int, error: Exception) -> UnreadableRecord:
    """The record at ``start`` as far as it can be read, with the batch positioned after it."""
    buffer = batch._buffer
    fallback_offset = batch.base_offset + batch._next_record_index
    reason = f"{type(error).__name__}: {error}"
    try:
        length, body = decode_varint(buffer, start)
    except (ValueError, IndexError):
        length, body = -1, start
    if length < 0 or body + length > len(buffer):
        # The length prefix itself is unusable, so no later record of this batch can be found: each
        # remaining offset comes out as unreadable (the batch's record count says how many there are).
        batch._pos = len(buffer)
        return UnreadableRecord(
            batch=batch,
            offset=fallback_offset,
            timestamp=batch.first_timestamp,
            key=None,
            value=None,
            headers=[],
            reason=f"the record batch is unreadable from this record on ({reason})",
        )
    end = body + length
    fields = _read_leniently(buffer, body, end, batch)
    batch._pos = end
    return UnreadableRecord(
        batch=batch,
        offset=batch.base_offset + fields.get("offset_delta", batch._next_record_index),
        timestamp=batch.first_timestamp + fields.get("timestamp_delta", 0),
        key=fields.get("key"),
        value=fields.get("value"),
        headers=fields.get("headers", []),
        reason=reason,
    )


def _read_leniently(buffer, pos: int, end: int, batch) -> dict:
    """Every field of one record that can be read, in order, stopping at the first that cannot."""
    fields: dict = {}
    try:
        _, pos = decode_varint(buffer, pos)  # attributes
        fields["timestamp_delta"], pos = decode_varint(buffer, pos)
        fields["offset_delta"], pos = decode_varint(buffer, pos)
        for name in ("key", "value"):
            size, pos = decode_varint(buffer, pos)
            if size > end - pos:
                return fields
            fields[name] = bytes(buffer[pos : pos + size]) if size >= 0 else None
            pos += max(size, 0)
        count, pos = decode_varint(buffer, pos)
        headers: list[tuple[str, bytes | None]] = []
        fields["headers"] = headers
        for _ in range(max(0, min(count, end - pos))):
            key_size, pos = decode_varint(buffer, pos)
            if not 0 <= key_size <= end - pos:
                return fields
            key = bytes(buffer[pos : pos + key_size]).decode("utf-8", "backslashreplace")
            pos += key_size
            value_size, pos = decode_varint(buffer, pos)
            if value_size > end - pos:
                return fields
            headers.append((key, bytes(buffer[pos : pos + value_size]) if value_size >= 0 else None))
            pos += max(value_size, 0)
    except (ValueError, IndexError):
        pass
    return fields


def _skip_one_offset(partition_records, error: Exception):
    """An unreadable record at the offset being read; the partition moves past it and refetches."""
    tp = partition_records.topic_partition
    offset = partition_records.next_fetch_offset
    record = kafka_fetcher.ConsumerRecord(
        tp.topic,
        tp.partition,
        partition_records.leader_epoch,
        offset,
        -1,
        -1,
        None,
        None,
        [],
        RecordDamage(
            f"the fetched data of this partition is unreadable here: {type(error).__name__}: {error}"
        ),
        -1,
        -1,
        -1,
    )
    partition_records.next_fetch_offset = offset + 1
    partition_records.drain()
    return record
