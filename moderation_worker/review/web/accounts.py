"""Logging in and out, and the admins' user management."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from moderation_worker.review import auth
from moderation_worker.review.auth import LoginRefused
from moderation_worker.review.models import ROLES, User
from moderation_worker.review.web.context import ConsoleContext
from moderation_worker.review.web.security import COOKIE, Admin, Checked, Ctx, Db, Forbidden
from moderation_worker.review.web.views import page

router = APIRouter()


def _safe_next(target: str | None) -> str:
    # Only a path of this site: never an absolute URL or //host (an open redirect).
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return page(request, "login.html", None, next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, db: Db, ctx: Ctx) -> Response:
    form = await request.form()
    name, password = str(form.get("username") or ""), str(form.get("password") or "")
    target = _safe_next(str(form.get("next") or "/"))
    review = ctx.review
    try:
        token, _who = auth.login(
            db,
            name,
            password,
            address=request.client.host if request.client else "unknown",
            ttl_s=review.session_ttl_s,
            max_failures=review.login_max_failures,
            window_s=review.login_window_s,
        )
    except LoginRefused as exc:
        db.commit()  # the failed attempt counts towards the limit, and is audited
        return page(request, "login.html", None, next=target, error=str(exc), status_code=401)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, token, ctx)
    return response


def set_session_cookie(request: Request, response: Response, token: str, ctx: ConsoleContext) -> None:
    secure = (
        ctx.review.cookie_secure if ctx.review.cookie_secure is not None else request.url.scheme == "https"
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ctx.review.session_ttl_s),
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )


@router.post("/logout")
def logout(request: Request, _checked: Checked, db: Db) -> Response:
    auth.logout(db, request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/admin/users")
def users_page(request: Request, who: Admin, db: Db) -> Response:
    users = db.scalars(select(User).order_by(User.name)).all()
    return page(request, "users.html", who, users=users, roles=ROLES, error=None)


@router.post("/admin/users")
async def add_user(
    request: Request, _checked: Checked, who: Admin,
    db: Db,
) -> Response:  # fmt: skip
    form = await request.form()
    try:
        auth.add_user(db, str(form.get("name") or "").strip(), str(form.get("role") or ""),
                      str(form.get("password") or "") or None, actor=who.user.name)  # fmt: skip
    except ValueError as exc:
        db.rollback()
        users = db.scalars(select(User).order_by(User.name)).all()
        return page(request, "users.html", who, users=users, roles=ROLES, error=str(exc), status_code=400)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}")
async def change_user(
    user_id: int, request: Request, _checked: Checked,
    who: Admin, db: Db,
) -> Response:  # fmt: skip
    form = await request.form()
    user = db.get(User, user_id)
    if user is None:
        raise Forbidden("no such user")
    if form.get("disabled") in ("true", "false"):
        if user.id == who.user.id:
            raise Forbidden("an admin cannot disable themselves")
        auth.set_disabled(db, user, form.get("disabled") == "true", actor=who.user.name)
    if form.get("role") in ROLES:
        auth.set_role(db, user, str(form.get("role")), actor=who.user.name)
    return RedirectResponse("/admin/users", status_code=303)
