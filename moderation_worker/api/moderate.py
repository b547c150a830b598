"""One API request, start to end, independent of HTTP: resolve the image, prepare it on the shared
pipeline, wait for the batcher's scoring call, and hand back the verdict (or an ApiError)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import structlog

from moderation_worker.api import sources
from moderation_worker.api.batcher import Batcher, Expired, QueueFull
from moderation_worker.api.errors import ApiError, from_moderation_error
from moderation_worker.api.settings import ApiSettings
from moderation_worker.errors import ModerationError
from moderation_worker.events import Decision, ModerationRequest, ModerationResult
from moderation_worker.fetch import Fetcher
from moderation_worker.outcomes import OutcomeKind
from moderation_worker.pipeline import Pipeline

log = structlog.get_logger(__name__)


@dataclass
class Moderator:
    """What every request shares: the pipeline (the worker's), its fetcher, the batcher."""

    pipeline: Pipeline
    fetcher: Fetcher
    batcher: Batcher
    settings: ApiSettings
    max_image_bytes: int
    fetch_timeout_s: float
    publish: Callable[[ModerationResult, bytes | None], None] | None = None  # flagged verdicts, if on

    def __post_init__(self) -> None:
        self._prepare_slots = anyio.CapacityLimiter(self.settings.prepare_concurrency)

    async def moderate(
        self, request: ModerationRequest, *, gone: Callable[[], Awaitable[bool]] | None = None
    ) -> ModerationResult:
        deadline = time.monotonic() + self.settings.request_timeout_s
        with self.batcher.expect():  # a batch forming meanwhile may wait for this request
            ticket = await self._prepare_and_submit(request, deadline)
        outcomes = await self._wait(ticket, deadline, gone)
        outcome = outcomes[0]
        if outcome.kind is not OutcomeKind.RESULT or outcome.result is None:
            raise (
                from_moderation_error(outcome.error)
                if outcome.error
                else ApiError(500, "internal", "no verdict")
            )
        result = outcome.result
        if self.publish is not None and result.decision is not Decision.ALLOW:
            self.publish(result, (request.content_id or request.event_id).encode())
        return result

    async def _prepare_and_submit(self, request: ModerationRequest, deadline: float):
        image = await anyio.to_thread.run_sync(self._resolve, request.image_url, limiter=self._prepare_slots)
        shown = (
            request.model_copy(update={"image_url": image.url}) if image.url != request.image_url else request
        )
        try:
            prepared = await anyio.to_thread.run_sync(
                lambda: self.pipeline.prepare_fetched(shown, image.data, fetch_ms=image.fetch_ms),
                limiter=self._prepare_slots,
            )
        except ModerationError as exc:
            raise from_moderation_error(exc) from exc
        job = prepared.jobs[0]
        size = (
            job.image.image.width * job.image.image.height * 3 if job.image is not None else len(image.data)
        )
        try:
            return self.batcher.submit(
                prepared, size_bytes=size, timeout_s=max(0.0, deadline - time.monotonic())
            )
        except QueueFull as exc:
            raise ApiError(
                429, "queue_full", f"the server is busy: {exc}; retry shortly", retry_after_s=1
            ) from exc

    def _resolve(self, url: str) -> sources.Image:
        return sources.resolve(
            url,
            fetcher=self.fetcher,
            settings=self.settings,
            max_bytes=self.max_image_bytes,
            timeout_s=self.fetch_timeout_s,
        )

    async def _wait(self, ticket, deadline: float, gone):
        waiting = asyncio.wrap_future(ticket.future)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                ticket.cancel()
                raise ApiError(504, "timeout", "the answer took longer than the server's request timeout")
            try:
                return await asyncio.wait_for(asyncio.shield(waiting), timeout=min(left, 0.25))
            except TimeoutError:
                if gone is not None and await gone():
                    ticket.cancel()  # the client went away: never scored
                    raise ApiError(499, "client_gone", "the client closed the connection") from None
            except Expired as exc:
                raise ApiError(504, "timeout", "the request expired before it was scored") from exc
