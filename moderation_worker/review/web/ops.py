"""``/livez``, ``/readyz`` and ``/metrics``: the only routes that answer without a login (they hold no
item content)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from moderation_worker.review.store import migrations_current
from moderation_worker.review.web.context import ConsoleContext
from moderation_worker.review.web.security import Ctx

router = APIRouter()


@router.get("/livez")
def livez() -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@router.get("/readyz")
def readyz(ctx: Ctx) -> Response:
    checks = {"database": _database_ok(ctx), "migrations_current": migrations_current(ctx.engine)}
    if ctx.outbox is not None:
        checks["broker_reachable"] = ctx.outbox.broker_ok is not False  # unknown counts as reachable
    if ctx.ingest_ok:
        checks["ingesting"] = bool(ctx.ingest_ok.get("ok", True))
    failing = [name for name, ok in checks.items() if not ok]
    body = {"status": "fail" if failing else "ok", "failing": failing, "checks": checks}
    return JSONResponse(body, status_code=503 if failing else 200, headers={"Cache-Control": "no-store"})


def _database_ok(ctx: ConsoleContext) -> bool:
    try:
        with ctx.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@router.get("/metrics")
def metrics(request: Request, ctx: Ctx) -> Response:
    body, content_type = ctx.metrics.exposition(request.headers.get("accept", ""))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
