"""The ASGI application: routers, the one mapping from errors to HTTP, and the lifespan.

`create_app(settings)` builds everything from the settings it is given; nothing is created at
import time. API paths answer errors as `{"error": {"code", "message"}}`; other paths as a page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from keepdesk import __version__, errors
from keepdesk.accounts import admin_views as accounts_admin_views
from keepdesk.accounts import api as accounts_api
from keepdesk.accounts import views as accounts_views
from keepdesk.clock import Clock
from keepdesk.config import Settings
from keepdesk.mail import api as mail_api
from keepdesk.mail import facts as mail_facts
from keepdesk.mail import parsers
from keepdesk.mail import views as mail_views
from keepdesk.ops import api as ops_api
from keepdesk.ops import metrics as ops_metrics
from keepdesk.presence import hub as presence_hub
from keepdesk.presence import views as presence_views
from keepdesk.presence.relay import PostgresRelay, SocketRelay
from keepdesk.runtime import Runtime
from keepdesk.tickets import api as tickets_api
from keepdesk.tickets import macros_api, mention_views, mentions_api, ticket_views
from keepdesk.tickets import views as tickets_views
from keepdesk.web import pages as web_pages
from keepdesk.web.headers import SecurityHeaders
from keepdesk.workers.runner import run_workers

log = logging.getLogger("keepdesk.app")

API_PREFIX = "/api/v1"

# Every folder templates come from, each under its own prefix (STYLE.md: listed in one place).
TEMPLATE_FOLDERS = {
    "web": web_pages.TEMPLATE_DIR,
    "accounts": accounts_views.TEMPLATES,
    "tickets": tickets_views.TEMPLATES,
    "presence": presence_views.TEMPLATES,
    "mail": mail_views.TEMPLATES,
}

STATUS = {
    errors.NotFound: 404,
    errors.InvalidInput: 422,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.Conflict: 409,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}

_DESCRIPTION = """\
The keepdesk REST API. Authenticate with `Authorization: Bearer <token>`; create a token with
`keepdesk token create EMAIL` or `POST /api/v1/tokens`. Lists page with an opaque `cursor`
and `limit`; every error is `{"error": {"code": "...", "message": "..."}}`.
"""


def create_app(
    settings: Settings, *, start_workers: bool = True, clock: Clock | None = None
) -> FastAPI:
    runtime = Runtime.from_settings(settings, clock=clock)
    presence = presence_hub.Presence(runtime.clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        workers = None
        relay: PostgresRelay | SocketRelay | None
        if runtime.db.dialect == "postgresql":
            # Several instances may share the database: presence crosses them by LISTEN/NOTIFY.
            relay = await PostgresRelay.open(presence, runtime.db)
        else:
            # Processes on SQLite share a host and a data directory (serve --processes N).
            relay = SocketRelay.open(presence, settings.data_dir / "run" / "presence")
        presence.relay = relay
        if start_workers and settings.workers_enabled:
            workers = asyncio.create_task(run_workers(runtime, stop), name="keepdesk-workers")
        try:
            yield
        finally:
            stop.set()
            if workers is not None:
                await workers
            if relay is not None:
                presence.relay = None
                await relay.close()
            await runtime.db.dispose()
            # uvicorn ends by re-raising SIGTERM: no exit handlers run after this.
            await asyncio.to_thread(parsers.shutdown)

    app = FastAPI(
        title="keepdesk",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        # The bundled docs pages load scripts from a CDN; no page of ours loads another host.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.start_workers = start_workers
    app.state.presence = presence
    # Routes are matched in order, one by one: the busiest come first (no two routers share a
    # path, so the order changes nothing else).
    app.include_router(tickets_api.router, prefix=API_PREFIX)
    app.include_router(accounts_api.router, prefix=API_PREFIX)
    app.include_router(macros_api.router, prefix=API_PREFIX)
    app.include_router(mentions_api.router, prefix=API_PREFIX)
    app.include_router(mail_api.router, prefix=API_PREFIX)
    # The agents' pages: cookie sessions and CSRF (accounts.browser), never bearer tokens.
    app.state.pages = web_pages.Pages(TEMPLATE_FOLDERS)
    app.include_router(tickets_views.router)
    app.include_router(ticket_views.router)
    app.include_router(presence_views.router)
    app.include_router(accounts_views.router)
    app.include_router(accounts_admin_views.router)
    app.include_router(mail_views.router)
    app.include_router(mention_views.router)
    app.include_router(ops_api.router)
    app.include_router(ops_metrics.router)
    # The ticket page shows what mail knows about a message (tickets cannot import mail).
    app.state.mail_facts = mail_facts.mail_facts_for_messages
    app.mount(web_pages.STATIC_PREFIX, StaticFiles(directory=web_pages.STATIC_DIR), name="static")
    _install_error_handlers(app)
    app.state.metrics = ops_metrics.Metrics()
    # Added first, so it runs inside SecurityHeaders and sees the request id it assigns.
    app.add_middleware(ops_metrics.RequestMetrics, metrics=app.state.metrics)
    app.add_middleware(SecurityHeaders, https=settings.server_base_url.startswith("https://"))
    return app


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path in ("/healthz", "/readyz")


def _error(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if _wants_json(request):
        body: dict[str, Any] = {"code": code, "message": message}
        if details:
            body["details"] = details
        return JSONResponse({"error": body}, status_code=status, headers=headers)
    return web_pages.error_response(
        request,
        status=status,
        code=code,
        message=message,
        request_id=_request_id(request),
        headers=headers,
    )


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.KeepdeskError)
    async def keepdesk_error(request: Request, exc: errors.KeepdeskError) -> Response:
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        headers = None
        if isinstance(exc, errors.RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, errors.Unauthenticated) and _wants_json(request):
            headers = {"WWW-Authenticate": 'Bearer realm="keepdesk"'}
        return _error(request, status, exc.code, exc.message, exc.details or None, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body",
                "message": err.get("msg", "invalid"),
            }
            for err in exc.errors()
        ]
        first = problems[0] if problems else {"field": "body", "message": "invalid"}
        return _error(
            request,
            422,
            "invalid_input",
            f"{first['field']}: {first['message']}",
            {"problems": problems[:20]},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return _error(
            request,
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            message,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(StaleDataError)
    async def stale(request: Request, exc: StaleDataError) -> Response:
        return _error(
            request,
            409,
            "version_conflict",
            "someone else changed this at the same moment; reload it and try again",
        )

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> Response:
        log.warning("integrity error (request %s): %s", _request_id(request), exc.orig)
        return _error(
            request,
            409,
            "conflict",
            "the change conflicts with data saved at the same moment; try again",
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(OSError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        log.error("database unavailable (request %s): %s", _request_id(request), exc)
        return _error(
            request,
            503,
            "unavailable",
            "the database is unavailable; try again in a moment",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error (request %s)", _request_id(request))
        return _error(
            request,
            500,
            "internal",
            f"internal error; the server log has the details (request {_request_id(request)})",
        )
