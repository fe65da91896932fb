"""Migrations page and its JSON twin."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response, Template
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from dashboard.context import Dashboard
from dashboard.db import describe_error
from dashboard.migrations.status import MigrationStatus
from dashboard.web.render import render


async def read_status(dash: Dashboard) -> tuple[MigrationStatus | None, str]:
    if dash.status is None:
        return None, "no database configured (DASHBOARD_DATABASE_URL is not set)"
    try:
        return await dash.status.read(), ""
    except Exception as exc:
        dash.health.mark_failure(exc)
        return None, describe_error(exc)


class MigrationsController(Controller):
    @get("/migrations", name="migrations")
    async def page(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Template:
        status, error = await read_status(dashboard)
        return render(request, "migrations", {"status": status, "error": error})

    @get("/api/migrations", name="api_migrations")
    async def api(
        self, dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Response[dict[str, Any]]:
        status, error = await read_status(dashboard)
        if status is None:
            return Response(
                {"error": "database unreachable", "reason": error},
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(status.to_json())
