"""Wiring: settings in, a ready worker (or a one-off checker) out. The only place clients are built."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from moderation_worker.cache import BoundedLRUCache, make_feature_cache
from moderation_worker.config import Settings
from moderation_worker.errors import StartupError
from moderation_worker.fetch import Fetcher, S3Fetcher, make_s3_client, parse_s3_url
from moderation_worker.health import HealthState
from moderation_worker.health_server import HealthServer
from moderation_worker.metrics import WorkerMetrics
from moderation_worker.model.base import Scorer
from moderation_worker.pipeline import ImageLimits, Pipeline
from moderation_worker.policies import PolicyPack, load_policy_pack
from moderation_worker.publish import OutcomePublisher, Topics
from moderation_worker.retry import ObjectRetries, PartitionBackoff
from moderation_worker.signals import StopSignal
from moderation_worker.specialists.stage import SpecialistStage
from moderation_worker.transfer import Transfers
from moderation_worker.worker import StopConditions, Worker

log = structlog.get_logger(__name__)


def load_scorer(
    settings: Settings, *, metrics: WorkerMetrics | None = None, feature_cache: BoundedLRUCache | None = None
) -> Scorer:
    """The configured model, loaded through the Auto classes. Never swapped for another silently."""
    from moderation_worker.model.hf import HFScorer  # torch and transformers load here

    started = time.perf_counter()
    if feature_cache is None:
        feature_cache = make_feature_cache(settings.feature_cache_bytes)
    scorer = HFScorer.from_pretrained(
        settings.model_id,
        revision=settings.model_revision,
        device=settings.device,
        dtype=settings.dtype,
        feature_cache=feature_cache,
        max_pairs_per_pass=settings.score_batch_pairs,
        token_budget=settings.score_token_budget,
        strategy=settings.scoring_strategy,
        suffix_layout=settings.scoring_suffix_layout,
        attn_implementation=settings.attn_implementation,
        compile_model=settings.model_compile,
        local_files_only=settings.model_local_files_only,
    )
    elapsed = time.perf_counter() - started
    if metrics is not None:
        metrics.set_model_load_seconds(elapsed)
    log.info("model_loaded", **vars(scorer.info), seconds=round(elapsed, 2))
    return scorer


def image_limits(settings: Settings, scorer: Scorer) -> ImageLimits:
    """The image stage's limits: the settings', with the edge lowered to what the model can use.

    Decoding pixels the model's processor throws away is wasted CPU (and, with JPEG's reduced-size
    decoding, a large part of decoding). A scorer that knows its input budget says so.
    """
    max_edge = settings.max_image_edge
    useful = getattr(scorer, "useful_image_edge", None)
    if useful is not None and useful < max_edge:
        log.info("image_edge_lowered_to_model_input", max_image_edge=max_edge, useful_image_edge=useful)
        max_edge = useful
    return ImageLimits(
        max_pixels=settings.max_image_pixels, max_edge=max_edge, allowed_formats=settings.allowed_formats
    )


def make_fetcher(settings: Settings, *, stop: StopSignal | None = None) -> S3Fetcher:
    """The S3 fetcher: a deadline on every transfer, and every transfer cut once ``stop`` is set."""
    return S3Fetcher(
        client=make_s3_client(settings),
        max_bytes=settings.max_image_bytes,
        transfers=Transfers(stop=stop.event if stop is not None else None),
        timeout_s=settings.fetch_timeout_s,
    )


def build_pipeline(
    settings: Settings,
    *,
    scorer: Scorer,
    pack: PolicyPack,
    verdict_cache: BoundedLRUCache | None = None,
    fetcher: Fetcher | None = None,
    stop: StopSignal | None = None,
    specialists: SpecialistStage | None = None,
) -> Pipeline:
    """The pipeline; the specialists the pack needs are built here unless given."""
    if specialists is None:
        specialists = SpecialistStage.from_settings(pack, settings)
    fetcher = fetcher or make_fetcher(settings, stop=stop)
    probe = getattr(fetcher, "store_is_serving", None)
    return Pipeline(
        fetcher=fetcher,
        object_retries=ObjectRetries(
            max_attempts=settings.object_max_attempts,
            probe=(lambda url: probe(parse_s3_url(url).bucket)) if probe is not None else None,
        ),
        scorer=scorer,
        pack=pack,
        limits=image_limits(settings, scorer),
        worker_id=settings.worker_id,
        verdict_cache=(
            BoundedLRUCache(settings.verdict_cache_entries) if verdict_cache is None else verdict_cache
        ),
        fetch_concurrency=settings.fetch_concurrency,
        fetch_timeout_s=settings.fetch_batch_timeout_s,
        specialists=specialists,
    )


def make_consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        **settings.kafka_common(),
        group_id=settings.group_id,
        enable_auto_commit=False,  # offsets are committed only after outcomes are acknowledged
        auto_offset_reset="earliest",  # a new group must not skip events published before it joined
        max_poll_records=settings.batch_size,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        enable_incremental_fetch_sessions=False,
    )


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        **settings.kafka_common(),
        acks="all" if settings.producer_acks == "all" else 1,
        enable_idempotence=settings.producer_acks == "all",  # no duplicates or reordering on retry
        compression_type=settings.producer_compression,
        linger_ms=5,
        max_request_size=settings.producer_max_request_bytes,
        delivery_timeout_ms=int(settings.delivery_timeout_s * 1000),
    )


@dataclass
class Runtime:
    """A built worker and what must be stopped with it. The health server is already serving."""

    worker: Worker
    producer: KafkaProducer
    health_server: HealthServer | None
    metrics: WorkerMetrics
    health: HealthState

    def run(self):
        try:
            return self.worker.run()
        finally:
            self.close()

    def close(self) -> None:
        """Flush and close the producer, stop the health server (idempotent; run() calls it)."""
        try:
            self.producer.flush(timeout=10)
        finally:
            self.producer.close(timeout=10)
            if self.health_server is not None:
                self.health_server.stop()


def build_runtime(
    settings: Settings, *, scorer: Scorer | None = None, stop: StopConditions | None = None
) -> Runtime:
    """Everything `moderation-worker run` needs. Fails fast on a bad pack or model, before joining.

    The health server comes up first: /livez answers while the model loads and the clients connect
    (each can take minutes), and /readyz says which of them start-up is waiting for.
    """
    metrics = WorkerMetrics()
    health = HealthState(
        stall_after_s=settings.health_stall_s or settings.max_poll_interval_ms / 1000,
        require_assignment=settings.ready_requires_assignment,
        startup_timeout_s=settings.health_startup_timeout_s,
    )
    health.starting("loading_policy_pack")
    health_server = None
    if settings.health_port is not None:
        health_server = HealthServer(health, metrics, host=settings.health_host, port=settings.health_port)
        health_server.start()
        log.info("health_server_started", url=health_server.url)
    try:
        return _build(
            settings, scorer=scorer, stop=stop, metrics=metrics, health=health, server=health_server
        )
    except BaseException:
        if health_server is not None:
            health_server.stop()
        raise


def _build(settings, *, scorer, stop, metrics, health, server) -> Runtime:
    pack = load_policy_pack(settings.policy_pack_path())
    # Before the model (minutes on a GPU): a pack whose specialists are not installed stops here.
    specialists = SpecialistStage.from_settings(pack, settings)
    caches = {
        "verdict": BoundedLRUCache(settings.verdict_cache_entries),
        "feature": make_feature_cache(settings.feature_cache_bytes),
    }
    if scorer is None:
        health.starting("loading_model")
        scorer = load_scorer(settings, metrics=metrics, feature_cache=caches["feature"])
    health.set_model_loaded(True)
    info = scorer.info
    metrics.set_model_info(
        model=info.model_id,
        revision=info.revision,
        dtype=info.dtype,
        device=info.device,
        strategy=info.strategy,
    )
    stop_signal = StopSignal()
    pipeline = build_pipeline(
        settings,
        scorer=scorer,
        pack=pack,
        verdict_cache=caches["verdict"],
        stop=stop_signal,
        specialists=specialists,
    )
    health.starting("connecting_to_kafka")
    with _saying_what_it_waits_for(settings):
        try:
            producer = make_producer(settings)
            consumer = make_consumer(settings)
        except KafkaError as exc:
            raise StartupError(
                f"cannot connect to Kafka at {settings.kafka_bootstrap_servers} over "
                f"{settings.kafka_security_protocol}: {exc!r}; check the broker and the security settings"
            ) from exc
    publisher = OutcomePublisher(
        producer=producer,
        topics=Topics(
            results=settings.results_topic, review=settings.review_topic, dead_letter=settings.dlq_topic
        ),
        worker_id=settings.worker_id,
        delivery_timeout_s=settings.delivery_timeout_s,
        max_record_bytes=settings.producer_max_request_bytes,
    )
    worker = Worker(
        consumer=consumer,
        publisher=publisher,
        pipeline=pipeline,
        input_topic=settings.input_topic,
        batch_size=settings.batch_size,
        poll_timeout_ms=settings.poll_timeout_ms,
        prepare_ahead=settings.prepare_ahead,
        backoff=PartitionBackoff(
            initial_s=settings.retry_initial_backoff_s, max_s=settings.retry_max_backoff_s
        ),
        metrics=metrics,
        health=health,
        caches=caches,
        stop=stop or StopConditions(max_events=settings.max_events, idle_timeout_s=settings.idle_timeout_s),
        stop_signal=stop_signal,
    )
    return Runtime(worker=worker, producer=producer, health_server=server, metrics=metrics, health=health)


@contextmanager
def _saying_what_it_waits_for(settings: Settings, *, every_s: float = 5.0) -> Iterator[None]:
    """Log what the Kafka clients are connecting to, then every few seconds while they still are.

    kafka-python's constructors block while they bootstrap (a broker that does not speak the
    configured security protocol keeps them there for many seconds, silently)."""
    servers, protocol = settings.kafka_bootstrap_servers, settings.kafka_security_protocol
    log.info("connecting_to_kafka", bootstrap_servers=servers, security_protocol=protocol)
    done = threading.Event()
    started = time.monotonic()

    def remind() -> None:
        while not done.wait(every_s):
            log.warning(
                "still_connecting_to_kafka",
                bootstrap_servers=servers,
                security_protocol=protocol,
                sasl_mechanism=settings.kafka_sasl_mechanism,
                waited_s=round(time.monotonic() - started, 1),
                hint="check the bootstrap servers, the security protocol and the SASL settings",
            )

    reminder = threading.Thread(target=remind, name="kafka-connect-reminder", daemon=True)
    reminder.start()
    try:
        yield
    finally:
        done.set()
        reminder.join(timeout=1)
