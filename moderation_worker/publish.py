"""The publish stage: outcomes to the results, review and dead-letter topics, acknowledged.

``publish`` returns only once the broker has acknowledged every record it sent (or raises
TransientError), which is what lets the worker commit offsets afterwards without losing anything.

Dead letters follow the Kafka Connect / Spring convention: the original key, value and headers
untouched (so a fixed event can be replayed by copying it back to the input topic as it is), with
the error and the record's origin in ``dlq.*`` headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka.errors import KafkaError, MessageSizeTooLargeError

from moderation_worker.errors import ErrorCode, PermanentError, TransientError
from moderation_worker.events import Decision
from moderation_worker.outcomes import Outcome, OutcomeKind

DLQ_HEADER_PREFIX = "dlq."
# The original record's own headers under the dlq. prefix (a dead letter replayed, failing again, or a
# producer spoofing a reason) are kept, renamed under this prefix: the worker's dlq.* headers are then
# the only ones that say why this record is here, and a replayed dead letter keeps its history.
DLQ_ORIGINAL_HEADER_PREFIX = "dlq.original-header."


@dataclass(frozen=True)
class Topics:
    results: str
    review: str
    dead_letter: str


class OutcomePublisher:
    def __init__(
        self,
        *,
        producer,
        topics: Topics,
        worker_id: str,
        delivery_timeout_s: float,
        max_record_bytes: int = 1024 * 1024,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._worker_id = worker_id
        self._timeout = delivery_timeout_s
        self._max_record_bytes = max_record_bytes

    def publish(self, outcomes: Sequence[Outcome], attempts: dict[tuple[str, int, int], int]) -> None:
        """Send every final outcome and wait for the broker's acks; raise TransientError otherwise."""
        futures = []
        try:
            for outcome in outcomes:
                record = outcome.record
                # Earlier failed tries (transient) plus this one; an object that failed while its
                # record waited behind another's retry was tried more often than its record was.
                tries = attempts.get((record.topic, record.partition, record.offset), 0) + 1
                tries = max(tries, getattr(outcome.error, "attempts", 0))
                if outcome.kind is OutcomeKind.RESULT:
                    try:
                        futures.extend(self._send_result(outcome))
                        continue
                    except (MessageSizeTooLargeError, ValueError, TypeError) as exc:
                        # This verdict cannot be published as it is: the event goes to the dead
                        # letters instead, rather than blocking its partition for ever.
                        outcome.error = PermanentError(
                            ErrorCode.INVALID_EVENT, f"the verdict cannot be published: {exc}"
                        )
                        outcome.kind, outcome.result = OutcomeKind.DEAD_LETTER, None
                futures.append(self._send_dead_letter(outcome, tries))
            self._producer.flush(timeout=self._timeout)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            raise TransientError(f"the broker did not acknowledge the batch's outcomes: {exc!r}") from exc

    def _send_result(self, outcome: Outcome) -> list:
        assert outcome.result is not None
        result = outcome.result
        value = result.to_json_bytes()
        key = _result_key(outcome)
        headers = [("event_id", result.event_id.encode()), ("content-type", b"application/json")]
        sent = [self._producer.send(self._topics.results, key=key, value=value, headers=headers)]
        if result.decision is not Decision.ALLOW:
            sent.append(self._producer.send(self._topics.review, key=key, value=value, headers=headers))
        return sent

    def _send_dead_letter(self, outcome: Outcome, attempts: int):
        record = outcome.record
        error = outcome.error
        code = error.code.value if isinstance(error, PermanentError) else "unknown"
        message = error.message if isinstance(error, PermanentError) else str(error)
        context = {
            "error.code": code,
            "error.message": message,
            "original.topic": record.topic,
            "original.partition": str(record.partition),
            "original.offset": str(record.offset),
            "original.timestamp_ms": "" if record.timestamp_ms is None else str(record.timestamp_ms),
            "attempts": str(attempts),
            "worker": self._worker_id,
            "failed_at": datetime.now(UTC).isoformat(),
            "event_id": outcome.event_id or "",
        }
        value = record.value
        if value is None and record.key is None:
            value = b""  # Kafka clients refuse a record with neither key nor value
            context["original.value_null"] = "true"
        elif value is not None and len(value) + len(record.key or b"") > self._max_record_bytes - 64 * 1024:
            # Too large to copy under the producer's request limit: keep the reason, say where the
            # original is (it stays in the input topic until retention removes it).
            context["original.value_omitted_bytes"] = str(len(value))
            value = None if record.key is not None else b""
        headers = [(_original_header_key(k), v if v is not None else b"") for k, v in record.headers]
        headers += [(DLQ_HEADER_PREFIX + k, _text(v)) for k, v in context.items()]
        return self._producer.send(self._topics.dead_letter, key=record.key, value=value, headers=headers)


def _original_header_key(key: str) -> str:
    # Null values become empty above: a Kafka client cannot send a null header value.
    return DLQ_ORIGINAL_HEADER_PREFIX + key if key.startswith(DLQ_HEADER_PREFIX) else key


def _text(value: str) -> bytes:
    return value.encode("utf-8", "backslashreplace")


def _result_key(outcome: Outcome) -> bytes:
    # Keyed like the input so one content's results stay in one partition, in order. An unkeyed
    # input falls back to content_id, then event_id, which keeps that promise per content.
    if outcome.record.key is not None:
        return outcome.record.key
    result = outcome.result
    assert result is not None
    return (result.content_id or result.event_id).encode()
