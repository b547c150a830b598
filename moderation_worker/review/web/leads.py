"""The leads' pages: releasing or reassigning claims, the audit log and its export, and what the
labels say per policy."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy import select

from moderation_worker.review import audit, labels, queue
from moderation_worker.review.models import Item, User
from moderation_worker.review.store import transaction
from moderation_worker.review.web.security import Checked, Ctx, Db, Forbidden, Lead
from moderation_worker.review.web.views import page

router = APIRouter()


@router.post("/items/{item_id}/release")
async def release(
    item_id: int, request: Request, _checked: Checked,
    who: Lead, db: Db,
    ctx: Ctx,
) -> Response:  # fmt: skip
    item = db.get(Item, item_id)
    if item is None or item.status != "open":
        raise Forbidden("no such open item")
    form = await request.form()
    to_name = str(form.get("to") or "").strip()
    if to_name:
        to = db.scalar(select(User).where(User.name == to_name, User.disabled.is_(False)))
        if to is None:
            raise Forbidden(f"no enabled user {to_name!r}")
        queue.reassign(db, item, to, actor=who.user, lease_s=ctx.review.lease_s)
    else:
        queue.release(db, item, actor=who.user, reason="released by a lead")
    return RedirectResponse(f"/items/{item_id}", status_code=303)


@router.get("/audit")
def audit_page(
    request: Request, who: Lead, db: Db,
    before: int | None = None, item: int | None = None,
) -> Response:  # fmt: skip
    entries = audit.entries(db, limit=200, before_id=before, item_id=item)
    return page(request, "audit.html", who, entries=entries, item=item)


@router.get("/audit.jsonl")
def audit_export(_who: Lead, ctx: Ctx) -> Response:
    def lines():
        with transaction(ctx.sessions) as session:
            yield from audit.export_jsonl(session)

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )


@router.get("/policies")
def policies_page(
    request: Request, who: Lead, db: Db,
    ctx: Ctx,
) -> Response:  # fmt: skip
    rows = [labels.figures(db, p.id) for p in ctx.pack.policies]
    return page(request, "policies.html", who, rows=rows, pack=ctx.pack)


@router.get("/policies/{policy_id}")
def policy_page(
    policy_id: str, request: Request, who: Lead,
    db: Db, ctx: Ctx, precision: float = 0.9,
) -> Response:  # fmt: skip
    policy = next((p for p in ctx.pack.policies if p.id == policy_id), None)
    if policy is None:
        raise Forbidden("no such policy in this console's pack")
    precision = min(max(precision, 0.5), 0.999)
    return page(
        request,
        "policy.html",
        who,
        policy=policy,
        figures=labels.figures(db, policy_id, target_precision=precision),
    )
