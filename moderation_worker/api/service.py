"""``moderation-worker serve``: the scorer and the pack loaded exactly as ``run`` loads them, the same
pipeline and caches, one batcher, and uvicorn in front. One model per process: scale by replicas."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
import uvicorn

from moderation_worker.api.app import ApiContext, create_app
from moderation_worker.api.batcher import Batcher
from moderation_worker.api.keys import KeyRing
from moderation_worker.api.metrics import ApiMetrics
from moderation_worker.api.moderate import Moderator
from moderation_worker.api.review_publish import ReviewPublisher
from moderation_worker.api.settings import ApiSettings
from moderation_worker.config import Settings
from moderation_worker.model.base import Scorer
from moderation_worker.signals import StopSignal

log = structlog.get_logger(__name__)


@dataclass
class Api:
    context: ApiContext
    batcher: Batcher
    review: ReviewPublisher | None = None

    def close(self) -> None:
        self.context.ready["stopping"] = True
        self.batcher.close()
        if self.review is not None:
            self.review.close()
        self.context.moderator.pipeline.close()


def build_api(settings: Settings, api: ApiSettings, *, scorer: Scorer | None = None) -> Api:
    from moderation_worker.app import build_pipeline, load_scorer, make_fetcher
    from moderation_worker.cache import BoundedLRUCache, make_feature_cache
    from moderation_worker.policies import load_policy_pack
    from moderation_worker.specialists.stage import SpecialistStage

    pack = load_policy_pack(settings.policy_pack_path())  # a bad pack fails before the model loads
    specialists = SpecialistStage.from_settings(pack, settings)
    if scorer is None:
        scorer = load_scorer(settings, feature_cache=make_feature_cache(settings.feature_cache_bytes))
    fetcher = make_fetcher(settings)
    pipeline = build_pipeline(
        settings, scorer=scorer, pack=pack, verdict_cache=BoundedLRUCache(settings.verdict_cache_entries),
        fetcher=fetcher, specialists=specialists,
    )  # fmt: skip
    metrics_ref: list[ApiMetrics] = []
    batcher = Batcher(
        pipeline,
        max_batch=api.max_batch,
        max_wait_s=api.max_wait_ms / 1000,
        max_requests=api.queue_max_requests,
        max_bytes=api.queue_max_bytes,
        on_batch=lambda size, seconds: metrics_ref[0].batch(size, seconds) if metrics_ref else None,
    )
    metrics = ApiMetrics(lambda: batcher.depth)
    metrics_ref.append(metrics)
    review = ReviewPublisher(settings, on_outcome=metrics.review_published) if api.publish_flagged else None
    moderator = Moderator(
        pipeline=pipeline,
        fetcher=fetcher,
        batcher=batcher,
        settings=api,
        max_image_bytes=settings.max_image_bytes,
        fetch_timeout_s=settings.fetch_timeout_s,
        publish=review.publish if review is not None else None,
    )
    context = ApiContext(
        moderator=moderator,
        keys=KeyRing(api.keys, allow_anonymous=api.allow_anonymous, rate_per_key=api.rate_per_key),
        metrics=metrics,
        model_id=scorer.info.model_id,
        ready={"model_loaded": True, "stopping": False},
    )
    return Api(context, batcher, review)


def web_config(api: Api, settings: ApiSettings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(api.context),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=5,
        server_header=False,
    )


def serve(settings: Settings, api_settings: ApiSettings, *, scorer: Scorer | None = None) -> int:
    api = build_api(settings, api_settings, scorer=scorer)
    server = uvicorn.Server(web_config(api, api_settings))
    log.info("api_serving", url=f"http://{api_settings.host}:{api_settings.port}", model=api.context.model_id)
    stop = StopSignal()
    try:
        with stop.handling_signals():  # uvicorn re-raises the signals it handled against these (see review)
            server.run()
    finally:
        api.close()
    return 0
