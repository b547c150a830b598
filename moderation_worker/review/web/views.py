"""Rendering: the templates (autoescaped: nothing an event carries is ever marked safe) and the view
of an item the item page shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from moderation_worker.policies import PolicyPack
from moderation_worker.review.auth import Authenticated, Viewer
from moderation_worker.review.models import Decision, Item, User, Verdict

templates = Jinja2Templates(directory=str(files("moderation_worker.review.web") / "templates"))
templates.env.autoescape = True  # every template, whatever its name


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for limit, unit, scale in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{seconds / scale:.0f} {unit}" if unit == "s" else f"{seconds / scale:.1f} {unit}"
    return f"{seconds / 86400:.1f} d"


templates.env.filters["age"] = _age


def page(
    request: Request, name: str, who: Authenticated | Viewer | None, *, status_code: int = 200, **values
) -> HTMLResponse:
    viewer = who.viewer if isinstance(who, Authenticated) else who
    values |= {
        "viewer": viewer,
        "csrf_token": viewer.csrf_token if viewer else "",
        "role": viewer.role if viewer else None,
    }
    return templates.TemplateResponse(request, name, values, status_code=status_code)


@dataclass(frozen=True)
class PolicyLine:
    id: str
    title: str
    rule: str
    score: float | None
    confidence: float | None
    threshold: float | None
    triggered: bool
    severity: str
    action: str


@dataclass(frozen=True)
class HistoryLine:
    at: str
    kind: str  # "verdict" | "decision"
    what: str
    event_id: str | None
    same_content: bool
    same_image: bool


def item_view(db: Session, item: Item, pack: PolicyPack) -> dict[str, Any]:
    verdict = db.get(Verdict, item.latest_verdict_id)
    body = verdict.body if verdict else {}
    rules = {p.id: p for p in pack.policies}
    lines = []
    for scored in body.get("policies", []):
        rule = rules.get(scored["id"])
        lines.append(
            PolicyLine(
                id=scored["id"],
                title=rule.title if rule else scored["id"],
                rule=rule.rule if rule else "(not in this console's pack)",
                score=scored.get("score"),
                confidence=scored.get("confidence"),
                threshold=scored.get("threshold"),
                triggered=bool(scored.get("triggered")),
                severity=scored.get("severity", ""),
                action=scored.get("action", ""),
            )
        )
    scored_ids = {line.id for line in lines}
    return {
        "verdict": verdict,
        "image": body.get("image", {}),
        "policies": lines,
        "unscored": [p for p in pack.policies if p.id not in scored_ids],
        "metadata_json": json.dumps(body.get("metadata", {}), indent=2, ensure_ascii=False, sort_keys=True),
        "pack": body.get("policy_pack", {}),
        "model": body.get("model", {}),
        "history": _history(db, item),
    }


def _history(db: Session, item: Item, limit: int = 50) -> list[HistoryLine]:
    verdicts = db.scalars(
        select(Verdict)
        .where(or_(Verdict.content_key == item.content_key, Verdict.sha256 == item.sha256))
        .order_by(Verdict.received_at.desc())
        .limit(limit)
    ).all()
    lines = [
        HistoryLine(
            at=v.received_at.isoformat(timespec="seconds"),
            kind="verdict",
            what=v.decision,
            event_id=v.event_id,
            same_content=v.content_key == item.content_key,
            same_image=v.sha256 == item.sha256,
        )
        for v in verdicts
    ]
    item_ids = {v.item_id for v in verdicts if v.item_id is not None}
    if item_ids:
        rows = db.execute(
            select(Decision, User.name, Item.content_key, Item.sha256)
            .join(User, User.id == Decision.moderator_id)
            .join(Item, Item.id == Decision.item_id)
            .where(Decision.item_id.in_(item_ids))
            .order_by(Decision.decided_at.desc())
            .limit(limit)
        ).all()
        lines += [
            HistoryLine(
                at=d.decided_at.isoformat(timespec="seconds"),
                kind="decision",
                what=f"{d.action} by {name}" + (f": {d.reason}" if d.reason else ""),
                event_id=None,
                same_content=key == item.content_key,
                same_image=sha == item.sha256,
            )
            for d, name, key, sha in rows
        ]
    return sorted(lines, key=lambda line: line.at, reverse=True)
