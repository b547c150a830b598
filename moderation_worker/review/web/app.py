"""The console's FastAPI application: routers, the security headers, and what a refused request gets."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from moderation_worker.review.web import accounts, leads, ops, pages
from moderation_worker.review.web.context import ConsoleContext
from moderation_worker.review.web.security import SECURITY_HEADERS, Forbidden, LoginRequired, login_url
from moderation_worker.review.web.views import page


def create_app(ctx: ConsoleContext) -> FastAPI:
    app = FastAPI(title="moderation review console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = ctx
    app.mount(
        "/static", StaticFiles(directory=str(files("moderation_worker.review.web") / "static")), name="static"
    )
    for router in (ops.router, accounts.router, pages.router, leads.router):
        app.include_router(router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        token = getattr(request.state, "new_session_token", None)
        if token:  # a proxy-authenticated browser gets a session of ours
            accounts.set_session_cookie(request, response, token, ctx)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.method == "GET":  # a browser (or anything that follows links) goes to log in
            return RedirectResponse(login_url(exc.path), status_code=303)
        return JSONResponse({"error": "login required"}, status_code=401)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        viewer = getattr(request.state, "viewer", None)
        return page(request, "error.html", viewer, message=exc.message, status_code=403)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"error": "bad request", "detail": str(exc.errors()[:3])}, status_code=400)

    return app
