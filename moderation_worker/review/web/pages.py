"""The moderators' pages: the queue, taking the next item, the item, deciding. Thin handlers: parse
the request, check who asks, call one domain function, answer with a page or a redirect."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from moderation_worker.review import decisions, queue
from moderation_worker.review.decisions import DecisionRefused, DecisionRequest
from moderation_worker.review.images import ImageUnavailable, render
from moderation_worker.review.models import DECISION_RANK, QUEUES, SEVERITY_RANK, Item, User, Verdict
from moderation_worker.review.web.security import Checked, Ctx, Db, Forbidden, Who
from moderation_worker.review.web.views import item_view, page

router = APIRouter()

BLURRED_SEVERITIES = {"high", "critical"}


def _filters(values) -> queue.Filters:
    return queue.Filters(
        tenant=(values.get("tenant") or "").strip() or None,
        policy=(values.get("policy") or "").strip() or None,
        decision=values.get("decision") if values.get("decision") in DECISION_RANK else None,
        severity=values.get("severity") if values.get("severity") in SEVERITY_RANK else None,
    )


@router.get("/")
def overview(
    request: Request,
    who: Who,
    db: Db,
    ctx: Ctx,
) -> Response:
    filters = _filters(request.query_params)
    shown = request.query_params.get("queue") if request.query_params.get("queue") in QUEUES else "default"
    if shown == "escalated" and who.user.role == "moderator":
        shown = "default"
    return page(
        request,
        "queue.html",
        who,
        stats=queue.stats(db),
        items=queue.waiting(db, queue=shown, filters=filters, limit=50),
        shown=shown,
        filters=filters,
        policies=[p.id for p in ctx.pack.policies],
        decisions=list(DECISION_RANK),
        severities=list(SEVERITY_RANK),
    )


@router.post("/next")
async def take_next(
    request: Request,
    who: Checked,
    db: Db,
    ctx: Ctx,
) -> Response:
    form = await request.form()
    name = form.get("queue") if form.get("queue") in QUEUES else "default"
    if name == "escalated" and who.user.role == "moderator":
        raise Forbidden("the escalated queue is for leads")
    item = queue.claim_next(db, who.user, queue=name, filters=_filters(form), lease_s=ctx.review.lease_s)
    if item is None:
        return RedirectResponse(f"/?queue={name}&empty=1", status_code=303)
    return RedirectResponse(f"/items/{item.id}", status_code=303)


def _item_or_404(db: Session, item_id: int) -> Item:
    item = db.get(Item, item_id)
    if item is None:
        raise Forbidden("no such item")
    return item


def _may_view(item: Item, user: User) -> bool:
    return user.role in ("lead", "admin") or queue.holds(item, user) or item.status == "decided"


@router.get("/items/{item_id}")
def show_item(
    item_id: int,
    request: Request,
    who: Who,
    db: Db,
    ctx: Ctx,
    error: str | None = None,
) -> Response:
    item = _item_or_404(db, item_id)
    if not _may_view(item, who.user):
        raise Forbidden("this item is not claimed by you: take the next item from the queue")
    view = item_view(db, item, ctx.pack)
    blurred = item.decision == "block" or item.severity in BLURRED_SEVERITIES
    return page(request, "item.html", who, item=item, view=view, blurred=blurred, error=error,
                lease_s=ctx.review.lease_s, claimed=queue.holds(item, who.user))  # fmt: skip


@router.get("/items/{item_id}/image")
def item_image(
    item_id: int,
    who: Who,
    db: Db,
    ctx: Ctx,
) -> Response:
    """Only the image of an item in the queue, by its id: no path or URL from the request is fetched."""
    item = _item_or_404(db, item_id)
    if not _may_view(item, who.user):
        raise Forbidden("this item is not claimed by you")
    verdict = db.get(Verdict, item.latest_verdict_id)
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Content-Disposition": "inline",
    }
    try:
        body = render(
            ctx.fetcher,
            verdict.image_url,
            max_bytes=ctx.settings.max_image_bytes,
            max_pixels=ctx.settings.max_image_pixels,
        )
    except ImageUnavailable as exc:
        return Response(
            str(exc), status_code=exc.status, media_type="text/plain; charset=utf-8", headers=headers
        )
    return Response(body, media_type="image/jpeg", headers=headers)


@router.post("/items/{item_id}/renew")
def renew(
    item_id: int,
    who: Checked,
    db: Db,
    ctx: Ctx,
) -> Response:
    if not queue.renew(db, item_id, who.user, lease_s=ctx.review.lease_s):
        return Response('{"renewed": false}', status_code=409, media_type="application/json")
    return Response('{"renewed": true}', media_type="application/json")


def _marked(form, mark: str) -> frozenset[str]:
    # One radio group per scored policy: mark:<policy id> = right | wrong | (nothing).
    return frozenset(
        key.removeprefix("mark:")
        for key, value in form.multi_items()
        if key.startswith("mark:") and value == mark
    )


@router.post("/items/{item_id}/decide")
async def decide(
    item_id: int,
    request: Request,
    who: Checked,
    db: Db,
    ctx: Ctx,
) -> Response:
    form = await request.form()
    item = _item_or_404(db, item_id)
    action = str(form.get("action", ""))
    try:
        if action == "skip":
            decisions.skip(db, item, who.user)
        else:
            decisions.decide(
                db,
                item,
                who.user,
                DecisionRequest(
                    action=action,
                    reason=str(form.get("reason") or "") or None,
                    right=_marked(form, "right"),
                    wrong=_marked(form, "wrong"),
                    missed=frozenset(map(str, form.getlist("missed"))),
                ),
                decisions_topic=ctx.review.decisions_topic,
                known_policies=ctx.known_policies,
            )
            ctx.metrics.decided(action)
    except DecisionRefused as exc:
        db.rollback()
        return show_item(item_id, request, who, db, ctx, error=str(exc))
    db.commit()  # before the redirect (and before the outbox publisher is woken)
    if ctx.outbox is not None and action != "skip":
        ctx.outbox.wake()
    if form.get("next") and action in ("uphold", "overturn", "escalate", "skip"):
        same_queue = item.queue if item.queue != "escalated" or who.user.role != "moderator" else "default"
        next_item = queue.claim_next(db, who.user, queue=same_queue, lease_s=ctx.review.lease_s)
        if next_item is not None:
            return RedirectResponse(f"/items/{next_item.id}", status_code=303)
    return RedirectResponse("/?decided=1", status_code=303)
