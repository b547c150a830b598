"""The kafka-python record-parsing patch: any bytes a producer writes come out as records, never a stall."""

from __future__ import annotations

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from moderation_worker import kafka_records
from moderation_worker.kafka_records import damage_of
from tests.hostile_records import RawHeaderKey

kafka_records.install()


def build_batch(records, base_offset=40) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for delta, (key, value, headers) in enumerate(records):
        builder.append(delta, timestamp=1_700_000_000_000 + delta, key=key, value=value, headers=headers)
    buffer = builder.build()
    buffer[0:8] = base_offset.to_bytes(8, "big")  # the broker assigns the base offset
    return bytes(buffer)


def parse(data: bytes):
    batch = MemoryRecords(data).next_batch()
    return list(batch)


def test_a_header_key_that_is_not_utf8_skips_only_its_own_record():
    # Given a good record, one whose header key is not UTF-8, and another good one, in one batch
    data = build_batch(
        [
            (b"k0", b"first", [("trace", b"1")]),
            (b"k1", b'{"event_id": "bad"}', [("ok", b"x"), (RawHeaderKey(b"\xff\xfebad"), b"v")]),
            (b"k2", b"third", []),
        ]
    )

    records = parse(data)

    # I expect three records at their own offsets: the middle one marked, the others untouched
    assert [r.offset for r in records] == [40, 41, 42]
    assert [damage_of(r) is None for r in records] == [True, False, True]
    assert records[0].value == b"first" and records[0].headers == [("trace", b"1")]
    assert records[2].value == b"third"
    unreadable = records[1]
    assert "UnicodeDecodeError" in damage_of(unreadable).reason
    # what can be copied of it: key, value, and its headers with the bad key escaped
    assert unreadable.key == b"k1" and unreadable.value == b'{"event_id": "bad"}'
    assert unreadable.headers == [("ok", b"x"), ("\\xff\\xfebad", b"v")]


def test_a_record_whose_length_prefix_is_garbage_marks_the_rest_of_its_batch():
    data = bytearray(build_batch([(b"a", b"one", []), (b"b", b"two", []), (b"c", b"three", [])]))
    # Overwrite the second record's length varint with a continuation byte run that never ends.
    first_len = data[DefaultRecordBatch.HEADER_STRUCT.size] >> 1
    second = DefaultRecordBatch.HEADER_STRUCT.size + 1 + first_len
    data[second : second + 3] = b"\xff\xff\xff"

    records = parse(bytes(data))  # (CRC is not checked when parsing records one by one)

    assert [r.offset for r in records] == [40, 41, 42]
    assert damage_of(records[0]) is None and records[0].value == b"one"
    assert all("unreadable from this record on" in damage_of(r).reason for r in records[1:])


def _partition_records(data: bytes, *, check_crcs: bool = True):
    return Fetcher.PartitionRecords(40, TopicPartition("t", 3), MemoryRecords(data), check_crcs=check_crcs)


def test_a_batch_that_fails_its_crc_yields_one_unreadable_offset_and_moves_past_it():
    data = bytearray(build_batch([(b"a", b"one", []), (b"b", b"two", [])]))
    data[-1] ^= 0xFF  # corrupt the last byte of the batch: its CRC no longer matches

    part = _partition_records(bytes(data))
    taken = part.take(10)

    # I expect one unreadable record at the offset being read, the partition past it, nothing stuck
    assert [(r.topic, r.partition, r.offset) for r in taken] == [("t", 3, 40)]
    assert "crc" in damage_of(taken[0]).reason
    assert part.next_fetch_offset == 41 and not part  # drained: the fetcher refetches from 41


def test_normal_records_pass_through_the_patched_fetcher_unchanged():
    part = _partition_records(build_batch([(b"a", b"one", [("h", b"1")]), (None, b"two", [])]))
    taken = part.take(10)
    assert [(r.offset, r.key, r.value, r.headers) for r in taken] == [
        (40, b"a", b"one", [("h", b"1")]),
        (41, None, b"two", []),
    ]
    assert all(damage_of(r) is None for r in taken)


def test_installing_twice_patches_once():
    read_msg = DefaultRecordBatch._read_msg
    kafka_records.install()
    assert DefaultRecordBatch._read_msg is read_msg


def test_a_kafka_python_without_the_patched_internals_refuses_to_start(monkeypatch):
    monkeypatch.setattr(kafka_records, "_installed", False)
    monkeypatch.delattr(DefaultRecordBatch, "_read_msg")
    with pytest.raises(kafka_records.ConfigurationError, match="_read_msg"):
        kafka_records.install()
