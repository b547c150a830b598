"""What the worker reports about its final outcomes: the run's summary, the metrics, one log line each.

Kept apart from the loop so the loop reads as delivery (poll, process, publish, commit, hold) and this
as bookkeeping. Every log line binds topic, partition, offset and event_id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from moderation_worker.metrics import WorkerMetrics
from moderation_worker.outcomes import Outcome, OutcomeKind

log = structlog.get_logger("moderation_worker.worker")


@dataclass(frozen=True)
class StopConditions:
    max_events: int | None = None  # final outcomes (results + dead letters), for backfills and tests
    idle_timeout_s: float | None = None  # no records and nothing waiting to be retried for this long


@dataclass
class RunSummary:
    results: int = 0
    dead_letters: int = 0
    retries: int = 0
    partitions_revoked: int = 0
    decisions: Counter = field(default_factory=Counter)
    dead_letter_codes: Counter = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return self.results + self.dead_letters


def account(summary: RunSummary, metrics: WorkerMetrics, final: Iterable[Outcome]) -> None:
    """Count, measure and log each published (final) outcome."""
    for outcome in final:
        _log_outcome(outcome)
        if outcome.kind is OutcomeKind.RESULT:
            assert outcome.result is not None
            result = outcome.result
            decision = result.decision.value
            summary.results += 1
            summary.decisions[decision] += 1
            metrics.record_outcome("result", decision=decision)
            metrics.cache_lookup("verdict", result.cache.verdict)
            if not result.cache.verdict:
                metrics.cache_lookup("feature", result.cache.feature)
            for stage in ("fetch", "decode", "score"):
                if stage in result.timings_ms:
                    metrics.observe_stage(stage, result.timings_ms[stage] / 1000)
        else:
            summary.dead_letters += 1
            summary.dead_letter_codes[outcome.error_code] += 1
            metrics.record_outcome("dead_letter", code=outcome.error_code)


def _log_outcome(outcome: Outcome) -> None:
    record = outcome.record
    fields = dict(
        event_id=outcome.event_id, topic=record.topic, partition=record.partition, offset=record.offset
    )
    if outcome.result is not None:
        result = outcome.result
        log.info(
            "event_moderated",
            **fields,
            decision=result.decision.value,
            triggered=[p.id for p in result.policies if p.triggered],
            latency_ms=result.timings_ms.get("total"),
            verdict_cache_hit=result.cache.verdict,
            feature_cache_hit=result.cache.feature,
        )
    else:
        log.warning(
            "event_dead_lettered",
            **fields,
            code=outcome.error_code,
            reason=getattr(outcome.error, "message", str(outcome.error)),
        )
