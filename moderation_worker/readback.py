"""Read a topic back from the beginning: for the demo's report and the tests.

Assigns every partition explicitly (no group, nothing committed) and polls until the expected
number of records arrived or nothing new came for a while. It does not ask for end offsets:
tansu, the embedded broker, answers that request wrongly.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    expected: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.1)
        if not partitions:
            return []
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        records: list = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=200)
            for batch in polled.values():
                records.extend(batch)
            now = time.monotonic()
            if polled:
                last_new = now
            if expected is not None and len(records) >= expected and now - last_new >= min(idle_s, 0.3):
                break
            if expected is None and now - last_new >= idle_s:
                break
        return records
    finally:
        consumer.close(autocommit=False)
