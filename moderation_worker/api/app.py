"""The API's FastAPI application: thin handlers over ``Moderator``."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from moderation_worker.api import openai_schema
from moderation_worker.api.errors import ApiError, from_moderation_error
from moderation_worker.api.keys import KeyRing
from moderation_worker.api.metrics import ApiMetrics
from moderation_worker.api.moderate import Moderator
from moderation_worker.errors import PermanentError
from moderation_worker.events import ModerationRequest, read_document, validate_request

_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class ApiContext:
    moderator: Moderator
    keys: KeyRing
    metrics: ApiMetrics
    model_id: str
    ready: dict  # {"model_loaded": bool, "stopping": bool}


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="moderation API", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(files("moderation_worker.api") / "static")), name="static")
    limit = ctx.moderator.settings.max_body_bytes

    async def body_json(request: Request) -> object:
        """The body as JSON, read through the topic's parser (a key twice or nesting too deep is
        invalid_json there too); a body over the limit is refused before it is read, or as soon as a
        body without a length passes the limit."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise ApiError(413, "payload_too_large", f"the body is over the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "payload_too_large", f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        try:
            return read_document(b"".join(chunks), what="the body")
        except PermanentError as exc:
            raise from_moderation_error(exc) from exc

    def authorise(request: Request) -> str:
        return ctx.keys.authorise(
            request.headers.get("authorization"), request.client.host if request.client else None
        )

    async def answer(request: Request, endpoint: str, handle) -> Response:
        started = time.perf_counter()
        try:
            authorise(request)
            body = await handle()
            response: Response = JSONResponse(body)
        except ApiError as exc:
            response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())
        ctx.metrics.answered(endpoint, response.status_code, time.perf_counter() - started)
        return response

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Response:
        async def handle():
            body = await body_json(request)
            url = openai_schema.image_url_of(body)
            event = ModerationRequest(event_id=f"api-{uuid.uuid4().hex}", image_url=_INLINE)
            result = await ctx.moderator.moderate(
                event.model_copy(update={"image_url": url}), gone=request.is_disconnected
            )
            return openai_schema.response(
                result, ctx.moderator.pipeline.pack, model=str(body.get("model") or ctx.model_id)
            )

        return await answer(request, "moderations", handle)

    @app.post("/v1/moderate")
    async def moderate(request: Request) -> Response:
        async def handle():
            body = await body_json(request)
            event = _event_of(body)
            result = await ctx.moderator.moderate(event, gone=request.is_disconnected)
            return result.model_dump(mode="json")

        return await answer(request, "moderate", handle)

    @app.get("/")
    def page() -> Response:
        html = (files("moderation_worker.api") / "templates" / "index.html").read_text()
        policies = [
            {"id": p.id, "title": p.title, "threshold": p.threshold}
            for p in ctx.moderator.pipeline.pack.policies
        ]
        html = html.replace("__POLICIES__", json.dumps(policies).replace("<", "\\u003c"))
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    @app.get("/livez")
    def livez() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        checks = {
            "model_loaded": bool(ctx.ready.get("model_loaded")),
            "not_stopping": not ctx.ready.get("stopping"),
        }
        failing = [name for name, ok in checks.items() if not ok]
        return JSONResponse({"status": "fail" if failing else "ok", "failing": failing, "checks": checks},
                            status_code=503 if failing else 200)  # fmt: skip

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        body, content_type = ctx.metrics.exposition(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    return app


def _event_of(body: object) -> ModerationRequest:
    """Our request contract, validated as the topic validates it. The contract caps image_url at 2048
    characters, which a data: URL passes at once: it is validated by the image sources instead."""
    image_url = body.get("image_url") if isinstance(body, dict) else None
    inline = isinstance(image_url, str) and image_url.startswith("data:")
    try:
        event = validate_request(dict(body, image_url=_INLINE) if inline else body)
    except PermanentError as exc:
        raise from_moderation_error(exc) from exc
    return event.model_copy(update={"image_url": image_url}) if inline else event


_INLINE = "data:image/*;base64,(inline)"
