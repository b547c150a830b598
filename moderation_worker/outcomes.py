"""What flows between the worker and the pipeline: a consumed record in, one outcome per record out.

Independent of the Kafka client's types, so the pipeline runs without a broker (``check``, tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from moderation_worker.errors import ModerationError, PermanentError
from moderation_worker.events import ModerationResult


@dataclass(frozen=True)
class InboundRecord:
    """A consumed record. ``damage``: why the Kafka client could not parse it (then key, value and
    headers hold what could be read of it); None for every normal record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None
    damage: str | None = None


class OutcomeKind(StrEnum):
    RESULT = "result"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"


@dataclass
class Outcome:
    record: InboundRecord
    kind: OutcomeKind
    event_id: str | None = None
    result: ModerationResult | None = None
    error: ModerationError | None = None

    @property
    def error_code(self) -> str | None:
        return self.error.code.value if isinstance(self.error, PermanentError) else None
