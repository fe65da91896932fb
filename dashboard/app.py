"""create_app(): assembly only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.audit.middleware import AuditDenialsMiddleware
from dashboard.auth.guards import authenticated
from dashboard.auth.session_store import PostgresSessionStore
from dashboard.auth.sessions import SESSION_STORE, session_config
from dashboard.context import Dashboard
from dashboard.logs import configure_if_unconfigured
from dashboard.runs.errors import RunError
from dashboard.settings import Settings
from dashboard.validation import InvalidText
from dashboard.web.activity import ActivityController
from dashboard.web.audit import AuditController
from dashboard.web.backends import BackendsController
from dashboard.web.deps import DEPENDENCIES
from dashboard.web.errors import (
    http_error,
    internal_error_handler,
    invalid_text_handler,
    run_error_handler,
)
from dashboard.web.health import HealthController
from dashboard.web.history import HistoryController
from dashboard.web.incidents import IncidentsController
from dashboard.web.locks import LocksController
from dashboard.web.login import LoginController
from dashboard.web.metrics import MetricsController
from dashboard.web.migrations import MigrationsController
from dashboard.web.overview import OverviewController
from dashboard.web.pool import PoolController
from dashboard.web.request_id import RequestIdMiddleware
from dashboard.web.review import ReviewController
from dashboard.web.run_decisions import RunDecisionsController
from dashboard.web.runs import RunsController
from dashboard.web.security import security_headers
from dashboard.web.templating import configure_templates

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
# Every request body is small (JSON actions, forms): anything larger is refused with 413.
MAX_REQUEST_BODY = 64 * 1024


def create_app(
    settings: Settings | None = None, *, engines: Mapping[str, AsyncEngine] | None = None
) -> Litestar:
    """Build the dashboard. `engines` are the host application's own engines (mounted mode)."""
    settings = settings or Settings.from_env()
    configure_if_unconfigured()  # one log format, request ids (dashboard/logs.py)
    if settings.secret_key_generated and not settings.demo:
        log.warning(
            "DASHBOARD_SECRET_KEY is not set: generated one for this process; sessions and "
            "CSRF tokens will not survive a restart or work across several processes"
        )
    dash = Dashboard.build(settings, engines)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await dash.start()
        try:
            yield
        finally:
            await dash.stop()

    async def start_lazily(request: Request[Any, Any, Any]) -> None:
        await dash.ensure_started()

    route_handlers: list[Any] = [
        HealthController,
        LoginController,
        OverviewController,
        MigrationsController,
        RunsController,
        RunDecisionsController,
        ReviewController,
        LocksController,
        ActivityController,
        BackendsController,
        PoolController,
        MetricsController,
        AuditController,
        # --- history / incidents controllers (registered here) ---
        IncidentsController,
        HistoryController,
        create_static_files_router(
            path="/static", directories=[STATIC_DIR], name="static", opt={"public": True}
        ),
    ]

    app = Litestar(
        route_handlers=route_handlers,
        state=State({"dashboard": dash}),
        dependencies=DEPENDENCIES,
        lifespan=[lifespan],
        plugins=[HTMXPlugin()],
        template_config=TemplateConfig(
            directory=TEMPLATES_DIR,
            engine=JinjaTemplateEngine,
            engine_callback=configure_templates,
        ),
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_httponly=True,
            cookie_samesite="strict",
            cookie_secure=settings.cookie_secure,
            cookie_path="/",
            safe_methods={"GET", "HEAD", "OPTIONS"},
        ),
        before_request=start_lazily,
        after_request=security_headers,
        guards=[authenticated],
        # sessions first (identity needs them), then the audit of refused attempts
        middleware=[*session_middleware(settings), AuditDenialsMiddleware],
        request_max_body_size=MAX_REQUEST_BODY,
        stores={SESSION_STORE: session_store(dash)},
        exception_handlers={
            HTTPException: http_error,
            RunError: run_error_handler,
            InvalidText: invalid_text_handler,
            Exception: internal_error_handler,  # logged, audited, and no detail leaked
        },
        debug=False,
        # The process's logging is dashboard/logs.py's (Litestar's default would replace the
        # root logger's handlers, a host application's included, with a format of its own).
        logging_config=None,
    )
    # Outermost, around Litestar's routing: every request, a 404 or 405 included, gets an
    # X-Request-ID and every log line it causes carries it (dashboard/web/request_id.py).
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    return app


def session_store(dash: Dashboard) -> Store:
    """Login sessions in the dashboard's state database, so that every process honours a
    login made on another (dashboard/auth/session_store.py); in memory without a database."""
    if dash.state is None:
        return MemoryStore()
    return PostgresSessionStore(dash.state)


# Requests that never need a session: probes, scrapes and static files (no store round trip)
SESSIONLESS_PATHS = [r"/static/", r"/(healthz|readyz|metrics)$"]


def session_middleware(settings: Settings) -> list[Any]:
    """Server-side sessions, only in password mode (proxy and none modes need none)."""
    if settings.auth_mode != "password":
        return []
    config = session_config(secure=settings.cookie_secure, exclude=SESSIONLESS_PATHS)
    return [config.middleware]
