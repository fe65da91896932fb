"""Overview: one card per area, each filled by that area's registered section."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response, Template

from dashboard.context import Dashboard
from dashboard.web.migrations import read_status
from dashboard.web.render import render

log = logging.getLogger(__name__)


async def overview_context(dash: Dashboard) -> dict[str, Any]:
    status, error = await read_status(dash)
    ctx: dict[str, Any] = {"status": status, "error": error}
    for section in dash.overview_sections:
        try:
            ctx.update(await section(dash))
        except Exception:
            log.exception("overview section %r failed", section)
    return ctx


class OverviewController(Controller):
    @get("/", name="overview")
    async def page(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Template:
        return render(request, "overview", await overview_context(dashboard))

    @get("/api/overview", name="api_overview")
    async def api(
        self, dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Response[dict[str, Any]]:
        status, error = await read_status(dashboard)
        health = dashboard.health
        return Response(
            {
                "database": {"ok": health.ok, "reason": health.reason or None},
                "migrations": status.to_json() if status else {"error": error},
            }
        )
