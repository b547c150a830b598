"""The processes ``moderation-worker review`` runs: the ingester, the web console with its outbox
publisher, or both in one process (the default). Each part scales out on its own: several ``review
web`` replicas on one PostgreSQL behind a load balancer (sessions, claims and the outbox are in the
database), and ``review ingest`` replicas in one consumer group.

Start-up migrates the database under a lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import structlog
import uvicorn
from kafka import KafkaProducer

from moderation_worker.config import Settings
from moderation_worker.policies import load_policy_pack
from moderation_worker.review import queue
from moderation_worker.review.ingester import Ingester, make_review_consumer
from moderation_worker.review.metrics import ConsoleMetrics
from moderation_worker.review.outbox import OutboxPublisher, backlog
from moderation_worker.review.settings import ReviewSettings
from moderation_worker.review.store import make_engine, migrate, session_factory, transaction
from moderation_worker.review.web.app import create_app
from moderation_worker.review.web.context import ConsoleContext
from moderation_worker.signals import StopSignal

log = structlog.get_logger(__name__)

PARTS = frozenset({"ingest", "web"})


def decisions_producer(settings: Settings) -> KafkaProducer:
    delivery_ms = int(settings.delivery_timeout_s * 1000)
    return KafkaProducer(
        **settings.kafka_common(),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        delivery_timeout_ms=delivery_ms,
        # kafka-python insists delivery > linger + request timeout: keep a request within the delivery.
        request_timeout_ms=max(1000, min(30_000, delivery_ms - 1000)),
    )


@dataclass
class Console:
    context: ConsoleContext
    ingester: Ingester | None
    publisher: OutboxPublisher | None

    def start_background(self) -> None:
        if self.publisher is not None:
            self.publisher.start()
        if self.ingester is not None:
            thread = threading.Thread(target=self._ingest, name="review-ingester", daemon=True)
            thread.start()
            self._ingest_thread = thread

    def _ingest(self) -> None:
        assert self.ingester is not None
        try:
            self.ingester.run()
        except Exception as exc:  # the loop itself failed: readiness says so, the process keeps serving
            log.exception("review_ingester_stopped", error=repr(exc))
            self.context.ingest_ok["ok"] = False

    def stop(self) -> None:
        if self.ingester is not None:
            self.ingester.stop()
            thread = getattr(self, "_ingest_thread", None)
            if thread is not None:
                thread.join(timeout=15)
        if self.publisher is not None:
            self.publisher.stop()
        self.context.engine.dispose()


def build_console(settings: Settings, review: ReviewSettings, *, parts: frozenset[str] = PARTS) -> Console:
    from moderation_worker.app import make_fetcher  # the worker's S3 client builder, with deadlines

    engine = make_engine(review.database_url)
    migrate(engine)
    sessions = session_factory(engine)

    def state() -> dict:
        with transaction(sessions) as session:
            stats = queue.stats(session)
            return {
                "counts": stats.counts,
                "oldest_s": stats.oldest_s,
                "claimed": stats.claimed,
                "outbox": backlog(session),
            }

    metrics = ConsoleMetrics(state)
    publisher = (
        OutboxPublisher(sessions, lambda: decisions_producer(settings), interval_s=review.outbox_interval_s)
        if "web" in parts
        else None
    )
    context = ConsoleContext(
        settings=settings,
        review=review,
        engine=engine,
        sessions=sessions,
        pack=load_policy_pack(settings.policy_pack_path()),
        fetcher=make_fetcher(settings),
        metrics=metrics,
        outbox=publisher,
    )
    ingester = None
    if "ingest" in parts:
        ingester = Ingester(
            consumer=make_review_consumer(settings, review),
            sessions=sessions,
            review_topic=settings.review_topic,
            results_topic=settings.results_topic,
            sample_rate=review.sample_rate,
            metrics=metrics,
        )
    return Console(context=context, ingester=ingester, publisher=publisher)


def serve(settings: Settings, review: ReviewSettings, *, parts: frozenset[str] = PARTS) -> int:
    """Run until SIGTERM or SIGINT; the web part on uvicorn in this thread, the rest beside it."""
    console = build_console(settings, review, parts=parts)
    console.start_background()
    try:
        if "web" in parts:
            server = uvicorn.Server(web_config(console.context))
            log.info("review_console_serving", url=f"http://{review.host}:{review.port}", parts=sorted(parts))
            # uvicorn handles SIGTERM/SIGINT while it runs, then re-raises them against the handlers it
            # found: let those be ours (a flag), so the clean-up below runs instead of the default death.
            stop = StopSignal()
            with stop.handling_signals():
                server.run()
        else:
            stop = StopSignal()
            with stop.handling_signals():
                log.info("review_ingester_running", group=review.group_id)
                stop.event.wait()
    finally:
        console.stop()
    return 0


def web_config(context: ConsoleContext) -> uvicorn.Config:
    review = context.review
    return uvicorn.Config(
        create_app(context),
        host=review.host,
        port=review.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=bool(review.trusted_proxies),
        forwarded_allow_ips=",".join(review.trusted_proxies) or None,
        timeout_keep_alive=5,
        server_header=False,
    )
