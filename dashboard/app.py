"""create_app(): assembly only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.context import Dashboard
from dashboard.settings import Settings
from dashboard.web.activity import ActivityController
from dashboard.web.backends import BackendsController
from dashboard.web.health import HealthController
from dashboard.web.locks import LocksController
from dashboard.web.metrics import MetricsController
from dashboard.web.migrations import MigrationsController
from dashboard.web.overview import OverviewController
from dashboard.web.placeholders import PLACEHOLDER_HANDLERS
from dashboard.web.pool import PoolController
from dashboard.web.runs import RunsController
from dashboard.web.security import security_headers
from dashboard.web.templating import configure_templates

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"


def create_app(
    settings: Settings | None = None, *, engines: Mapping[str, AsyncEngine] | None = None
) -> Litestar:
    """Build the dashboard. `engines` are the host application's own engines (mounted mode)."""
    settings = settings or Settings.from_env()
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

    route_handlers: list[Any] = [
        HealthController,
        OverviewController,
        MigrationsController,
        RunsController,
        LocksController,
        ActivityController,
        BackendsController,
        PoolController,
        MetricsController,
        *PLACEHOLDER_HANDLERS,
        create_static_files_router(path="/static", directories=[STATIC_DIR], name="static"),
    ]

    app = Litestar(
        route_handlers=route_handlers,
        state=State({"dashboard": dash}),
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
            cookie_path="/",
            safe_methods={"GET", "HEAD", "OPTIONS"},
        ),
        after_request=security_headers,
        exception_handlers={HTTPException: http_error},
        debug=False,
    )
    return app


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Every error is JSON with a clear `error` line (and `detail` kept for compatibility)."""
    body: dict[str, Any] = {"error": exc.detail, "status_code": exc.status_code}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers or None)
