"""The pipeline: a batch of raw records in, one outcome per record out, in the same order.

Stages, each a method below: parse (contract and policy subset) -> fetch and decode, concurrently
-> verdict cache -> score the misses together, one request per distinct image -> build verdicts.
No Kafka here: the worker hands in records and publishes what comes back. Every record gets
exactly one outcome: a result, a dead letter (the event is bad), or a retry (infrastructure failed).

The stages come in two halves so that the worker can overlap them across batches: ``prepare``
(parse, fetch, decode: I/O and CPU work) may run on a background thread, ``finish`` (scoring,
verdicts) runs on the worker's loop thread, because the scorer is used by one thread only. The
verdict cache, locked, is read in both: ``prepare`` serves a repeat of known bytes without decoding
them, ``finish`` catches verdicts stored since. ``process`` is both in turn.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import wait

import structlog

from moderation_worker import __version__
from moderation_worker.cache import BoundedLRUCache
from moderation_worker.errors import (
    ConfigurationError,
    ErrorCode,
    FetchAbortedError,
    ModerationError,
    PermanentError,
    StorageUnavailableError,
    TransientError,
)
from moderation_worker.events import (
    CacheHits,
    ModelDescription,
    ModerationRequest,
    ModerationResult,
    PolicyPackInfo,
    WorkerInfo,
    best_effort_event_id,
    parse_request,
)
from moderation_worker.fetch import FetchedObject, Fetcher
from moderation_worker.images import DecodedImage, decode_image, image_cache_key
from moderation_worker.jobs import CachedVerdict, ImageFacts, ImageLimits, PreparedBatch, _Job
from moderation_worker.model.base import Scorer, ScoringRequest
from moderation_worker.outcomes import InboundRecord, Outcome, OutcomeKind
from moderation_worker.policies import PolicyPack
from moderation_worker.retry import ObjectRetries
from moderation_worker.specialists.stage import OCR_EDGE, SpecialistStage
from moderation_worker.threads import DaemonPool
from moderation_worker.verdicts import build_result, decided_by_signal

__all__ = ["CachedVerdict", "ImageFacts", "ImageLimits", "Pipeline", "PreparedBatch"]

log = structlog.get_logger(__name__)


class Pipeline:
    def __init__(
        self,
        *,
        fetcher: Fetcher,
        scorer: Scorer,
        pack: PolicyPack,
        limits: ImageLimits,
        worker_id: str,
        verdict_cache: BoundedLRUCache[CachedVerdict],
        fetch_concurrency: int = 8,
        fetch_timeout_s: float = 120.0,
        object_retries: ObjectRetries | None = None,
        specialists: SpecialistStage | None = None,
    ) -> None:
        missing = pack.specialists() - (specialists.names if specialists else frozenset())
        if missing:
            raise ConfigurationError(
                f"pack {pack.name!r} combines signals of {', '.join(sorted(missing))}, which this "
                "pipeline was not given (build it with SpecialistStage.for_pack)"
            )
        self._specialists = specialists
        self._fetcher = fetcher
        self._object_retries = object_retries
        self._scorer = scorer
        self._pack = pack
        self._pack_info = PolicyPackInfo(name=pack.name, version=pack.version, hash=pack.content_hash)
        self._limits = limits
        self._worker = WorkerInfo(id=worker_id, version=__version__)
        self._verdict_cache = verdict_cache
        self._fetch_timeout_s = fetch_timeout_s
        self._pool = DaemonPool(fetch_concurrency, name="fetch")
        info = scorer.info
        self._model = ModelDescription(
            id=info.model_id,
            revision=info.revision,
            dtype=info.dtype,
            device=info.device,
            strategy=info.strategy,
        )
        self._model_key = info.cache_key

    def process(self, records: Sequence[InboundRecord]) -> list[Outcome]:
        return self.finish(self.prepare(records))

    def prepare(self, records: Sequence[InboundRecord]) -> PreparedBatch:
        """Parse, fetch and decode. Safe off the loop thread: it uses the fetcher and the fetch
        pool and reads the verdict cache (locked), never the scorer."""
        started = time.perf_counter()  # an event's total latency counts from here, waiting included
        jobs = [_Job(record=r, started=started) for r in records]
        for job in jobs:
            self._parse(job)
        self._fetch_and_decode([j for j in jobs if j.alive])
        return PreparedBatch(tuple(jobs))

    def finish(self, prepared: PreparedBatch) -> list[Outcome]:
        """Verdict cache, scoring and verdicts: one outcome per prepared record, in its order.
        On the loop thread only, once per prepared batch (it fills in the batch's jobs)."""
        jobs = prepared.jobs
        self._lookup_verdicts([j for j in jobs if j.alive])
        self._score([j for j in jobs if j.alive and not j.verdict_hit and j.matched is None])
        return [self._outcome(job) for job in jobs]

    def close(self, *, wait_s: float = 5.0) -> None:
        """Stop the fetch pool, waiting at most ``wait_s`` for fetches still running: with deadlines
        on every transfer (and cut on a stop) they end within that; a thread that does not (a DNS
        lookup that hangs) is a daemon and cannot hold up the process's exit."""
        transfers = getattr(self._fetcher, "transfers", None)
        if transfers is not None:
            transfers.cut_all("stopping")
        self._pool.shutdown(wait_s=wait_s)

    # --- stages ------------------------------------------------------------------------------------

    def _parse(self, job: _Job) -> None:
        record = job.record
        if record.damage is not None:
            job.error = PermanentError(
                ErrorCode.CORRUPT_RECORD,
                f"the Kafka client could not parse the record at {record.topic} partition "
                f"{record.partition} offset {record.offset} ({record.damage}); what could be read of "
                "it is copied here",
            )
            job.event_id = best_effort_event_id(record.value)
            return
        try:
            job.request = parse_request(job.record.value)
            job.policies = self._pack.select(job.request.policies)
        except PermanentError as exc:
            job.error = exc
        except Exception as exc:  # whatever else a hostile record triggers: its fault, never a crash
            job.error = PermanentError(ErrorCode.INVALID_EVENT, f"{type(exc).__name__}: {exc}")
        if job.error is not None:
            job.event_id = job.request.event_id if job.request else best_effort_event_id(job.record.value)

    def _fetch_and_decode(self, jobs: list[_Job]) -> None:
        futures = [self._pool.submit(self._fetch_one, job) for job in jobs]
        # A bound on the whole batch: botocore's timeouts are per socket operation, so a server that
        # trickles bytes could otherwise hold the batch past the group's max poll interval.
        wait(futures, timeout=self._fetch_timeout_s)
        for job, future in zip(jobs, futures, strict=True):
            if not future.done():
                future.cancel()
                job.error = StorageUnavailableError(
                    f"fetch did not finish within {self._fetch_timeout_s:g} s"
                )
                continue
            outcome = future.result()
            if isinstance(outcome, ModerationError):
                job.error = outcome
            elif outcome is not None:  # None: served from the verdict cache, nothing decoded
                job.image, job.facts = outcome, ImageFacts.of(outcome)

    def _fetch_one(self, job: _Job) -> DecodedImage | ModerationError | None:
        assert job.request is not None
        try:
            t0 = time.perf_counter()
            fetched = self._fetch(job.request.image_url)
            job.timings_ms["fetch"] = _ms(time.perf_counter() - t0)
            return self._decode(job, fetched.data)
        except ModerationError as exc:
            return exc
        except Exception as exc:  # a bug or an unforeseen library error: retry, never lose the event
            log.exception("fetch_or_decode_failed_unexpectedly", event_id=job.request.event_id)
            return TransientError(f"unexpected {type(exc).__name__} while fetching or decoding: {exc}")

    def _decode(self, job: _Job, data: bytes) -> DecodedImage | None:
        """Decode fetched bytes; None when a verdict of the same bytes is cached (nothing decoded)."""
        t1 = time.perf_counter()
        digest = hashlib.sha256(data).hexdigest()
        job.cache_key = image_cache_key(digest, self._limits.max_edge)
        # A repeat of bytes that decoded and scored before: no decode (the cache is thread-safe).
        if self._use_cached_verdict(job):
            return None
        image = decode_image(
            data,
            max_edge=self._limits.max_edge,
            max_pixels=self._limits.max_pixels,
            allowed_formats=self._limits.allowed_formats,
            sha256=digest,
        )
        job.timings_ms["decode"] = _ms(time.perf_counter() - t1)
        self._run_specialists(job, image, data)
        return image

    def _run_specialists(self, job: _Job, image: DecodedImage, data: bytes) -> None:
        """The hash match, then the specialists the job's policies need, on this (prepare-stage) thread."""
        if self._specialists is None:
            return
        started = time.perf_counter()
        job.matched = self._specialists.match(image.image)
        if job.matched is not None:  # known-bad: blocked, nothing else runs for it
            job.timings_ms["specialists"] = _ms(time.perf_counter() - started)
            return
        needed = self._pack.specialists(job.policies)
        if not needed:
            return
        images = {"model": image.image, "ocr": image.image}
        if "ocr" in needed and max(image.image.size) < min(OCR_EDGE, max(image.width, image.height)):
            # Small print needs more pixels than the model's input keeps: decode again for OCR.
            images["ocr"] = decode_image(
                data,
                max_edge=OCR_EDGE,
                max_pixels=self._limits.max_pixels,
                allowed_formats=self._limits.allowed_formats,
                sha256=image.sha256,
            ).image
        result = self._specialists.analyse(images, needed)
        job.signals = dict(result.signals)
        job.ocr_text = result.ocr_text
        job.timings_ms["specialists"] = result.elapsed_ms

    def prepare_fetched(
        self, request: ModerationRequest, data: bytes, *, fetch_ms: float = 0.0
    ) -> PreparedBatch:
        """One request whose image bytes the caller already has (the HTTP API's sources), prepared as
        ``prepare`` prepares a record: its policies selected, its bytes decoded or served from the
        verdict cache. ``finish`` takes it like any batch. Raises PermanentError for a bad request."""
        job = _Job(record=InboundRecord(topic="api", partition=0, offset=0, key=None, value=None),
                   started=time.perf_counter(), event_id=request.event_id, request=request)  # fmt: skip
        job.policies = self._pack.select(request.policies)
        job.timings_ms["fetch"] = fetch_ms
        decoded = self._decode(job, data)
        if decoded is not None:
            job.image, job.facts = decoded, ImageFacts.of(decoded)
        return PreparedBatch((job,))

    @property
    def pack(self) -> PolicyPack:
        return self._pack

    def _fetch(self, url: str) -> FetchedObject:
        """The object, or the error to raise: a transient failure of this one object that keeps
        repeating while the store serves others becomes retries_exhausted (see ObjectRetries)."""
        retries = self._object_retries
        try:
            fetched = self._fetcher.fetch(url)
        except FetchAbortedError:
            raise  # the worker is stopping: nothing learnt about the object
        except StorageUnavailableError as exc:
            final = retries.failed(url, exc) if retries is not None else None
            if final is not None:
                raise final from exc
            raise
        if retries is not None:
            retries.succeeded(url)
        return fetched

    def _verdict_key(self, job: _Job) -> tuple[str, str, str, str]:
        specialists = self._specialists.version if self._specialists else ""
        return (job.image_key, self._pack_info.hash, self._model_key, specialists)

    def _lookup_verdicts(self, jobs: list[_Job]) -> None:
        """Hits stored since the batch was prepared (by the batch finished just before it)."""
        for job in jobs:
            if not job.verdict_hit:
                self._use_cached_verdict(job)

    def _use_cached_verdict(self, job: _Job) -> bool:
        cached = self._verdict_cache.get(self._verdict_key(job))
        if cached is None or not all(
            p.id in cached.scores or decided_by_signal(p, cached.signals) for p in job.policies
        ):
            return False
        if not {rule.source for p in job.policies for rule in p.signals} <= cached.signals.keys():
            return False  # a specialist these policies need has not run on this image yet
        job.scores = {p.id: cached.scores[p.id] for p in job.policies if p.id in cached.scores}
        job.signals = dict(cached.signals)
        job.facts = cached.image
        job.verdict_hit = True
        job.feature_hit = False
        job.timings_ms["score"] = 0.0
        return True

    def _score(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        # One scoring request per distinct image: a batch holding the same image twice scores it once.
        by_image: dict[str, list[_Job]] = {}
        for job in jobs:
            by_image.setdefault(job.image_key, []).append(job)
        requests, wanted, groups = [], [], []
        for image_key, group in by_image.items():
            policy_ids = {p.id for job in group for p in job.policies}
            first = group[0]
            # A policy a specialist decided alone is not asked of the model (decide_above).
            policies = [p for p in self._pack.policies
                        if p.id in policy_ids and decided_by_signal(p, first.signals) is None]  # fmt: skip
            if not policies:  # every policy decided by a specialist: nothing for the model
                self._remember_verdicts(first, {})
                for job in group:
                    job.timings_ms["score"] = 0.0
                continue
            groups.append(group)
            wanted.append(policies)
            prompts = [self._pack.prompt(p, ocr_text=first.ocr_text) for p in policies]
            requests.append(
                ScoringRequest(
                    image=first.image.image,
                    image_key=image_key,
                    prompts=prompts,
                    preamble=self._pack.preamble(),
                )
            )
        t0 = time.perf_counter()
        results = self._score_isolating_failures(requests) if requests else []
        score_ms = _ms(time.perf_counter() - t0)
        for group, policies, result in zip(groups, wanted, results, strict=True):
            if isinstance(result, ModerationError):
                for job in group:
                    job.error = result
                continue
            scores = dict(zip((p.id for p in policies), result.yes_probabilities, strict=True))
            self._remember_verdicts(group[0], scores)
            for job in group:
                job.scores = {p.id: scores[p.id] for p in job.policies if p.id in scores}
                job.feature_hit = result.feature_cache_hit
                job.timings_ms["score"] = score_ms

    def _score_isolating_failures(self, requests: list[ScoringRequest]) -> list:
        """Score the batch; if it fails, score images one by one so one bad image can't sink the rest."""
        try:
            return list(self._scorer.score(requests))
        except Exception as exc:
            if len(requests) == 1:
                return [_classify_scoring_error(exc)]
            log.warning("batch_scoring_failed_retrying_one_by_one", error=str(exc), batch=len(requests))
        outcomes: list = []
        for request in requests:
            try:
                outcomes.extend(self._scorer.score([request]))
            except Exception as exc:
                outcomes.append(_classify_scoring_error(exc))
        return outcomes

    def _remember_verdicts(self, job: _Job, scores: dict[str, float]) -> None:
        assert job.facts is not None
        key = self._verdict_key(job)
        known = self._verdict_cache.get(key)
        merged = {**(known.scores if known else {}), **scores}
        signals = {**(known.signals if known else {}), **job.signals}
        self._verdict_cache.put(key, CachedVerdict(scores=merged, image=job.facts, signals=signals))

    def _outcome(self, job: _Job) -> Outcome:
        event_id = job.request.event_id if job.request else job.event_id
        if isinstance(job.error, TransientError):
            return Outcome(job.record, OutcomeKind.RETRY, event_id=event_id, error=job.error)
        if job.error is not None:
            return Outcome(job.record, OutcomeKind.DEAD_LETTER, event_id=event_id, error=job.error)
        job.timings_ms["total"] = _ms(time.perf_counter() - job.started)
        return Outcome(job.record, OutcomeKind.RESULT, event_id=event_id, result=self._build_result(job))

    def _build_result(self, job: _Job) -> ModerationResult:
        assert job.request is not None and job.facts is not None
        policies = list(job.policies)
        if job.matched is not None and all(p.id != job.matched.policy for p in policies):
            policies.append(self._pack.by_id()[job.matched.policy])  # the reason is always shown
        return build_result(
            job.request,
            job.facts,
            [(policy, job.scores.get(policy.id)) for policy in policies],
            pack=self._pack_info,
            model=self._model,
            worker=self._worker,
            cache=CacheHits(verdict=job.verdict_hit, feature=job.feature_hit),
            timings_ms=job.timings_ms,
            signals=job.signals,
            matched=job.matched,
        )


def _classify_scoring_error(exc: Exception) -> ModerationError:
    # Processors reject images they cannot tile (extreme aspect ratios, too small) with ValueError:
    # that image will never score, so it is the event's fault. Anything else (CUDA errors, OOM) is
    # the machine's: retry.
    if isinstance(exc, ValueError):
        return PermanentError(ErrorCode.UNSUPPORTED_IMAGE, f"the model cannot process this image: {exc}")
    return TransientError(f"scoring failed: {type(exc).__name__}: {exc}")


def _ms(seconds: float) -> float:
    return seconds * 1000.0
