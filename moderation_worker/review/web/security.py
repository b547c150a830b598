"""Who may do what in the console, as FastAPI dependencies, and the headers every answer carries.

Nothing but ``/livez``, ``/readyz``, ``/metrics``, ``/login`` and the static assets answers without a
session. A page without one redirects to the login page; any other request gets 401. Every request
that changes state carries the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``) or is refused with 403, before its handler runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from moderation_worker.review import auth
from moderation_worker.review.auth import Authenticated
from moderation_worker.review.web.context import ConsoleContext

COOKIE = "mw_review_session"
ROLE_RANK = {"moderator": 0, "lead": 1, "admin": 2}

SECURITY_HEADERS = {
    # Only our own vendored assets; no inline script, no framing, forms post only to us.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def context(request: Request) -> ConsoleContext:
    return request.app.state.console


Ctx = Annotated[ConsoleContext, Depends(context)]


def database(ctx: Ctx) -> Iterator[Session]:
    """One transaction per request, committed when the handler returns, before the response is sent
    (a redirect's next page sees it), rolled back if the handler raises."""
    session = ctx.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


Db = Annotated[Session, Depends(database)]


def current(request: Request, db: Db, ctx: Ctx) -> Authenticated:
    who = auth.from_cookie(db, request.cookies.get(COOKIE), ttl_s=ctx.review.session_ttl_s)
    if who is None and ctx.review.trusted_proxy_header:
        user = auth.from_proxy(
            db,
            request.headers.get(ctx.review.trusted_proxy_header),
            request.client.host if request.client else None,
            ctx.review.trusted_proxies,
        )
        if user is not None:
            token, who = auth.open_session(db, user, ttl_s=ctx.review.session_ttl_s)
            request.state.new_session_token = token  # the response sets the cookie (see app.py)
    if who is None:
        raise LoginRequired(request.url.path)
    request.state.viewer = who.viewer  # plain values, for an error page rendered after the session ends
    return who


Who = Annotated[Authenticated, Depends(current)]


def role(minimum: str):
    def check(who: Who) -> Authenticated:
        if ROLE_RANK[who.user.role] < ROLE_RANK[minimum]:
            raise Forbidden(f"this page is for the {minimum} role and above")
        return who

    return check


async def csrf(request: Request, who: Who) -> Authenticated:
    presented = request.headers.get("X-CSRF-Token")
    if presented is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        presented = (await request.form()).get("csrf_token")
    if not auth.csrf_ok(who, presented if isinstance(presented, str) else None):
        raise Forbidden("the form's security token is missing or stale: reload the page and try again")
    return who


def login_url(path: str) -> str:
    return "/login?next=" + quote(path if path.startswith("/") and not path.startswith("//") else "/")


Checked = Annotated[Authenticated, Depends(csrf)]  # a state-changing request with its CSRF token
Lead = Annotated[Authenticated, Depends(role("lead"))]
Admin = Annotated[Authenticated, Depends(role("admin"))]
