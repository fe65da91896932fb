"""Overview: one card per area, each filled by that area's registered section."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Request, get
from litestar.response import Response, Template

from dashboard.web.migrations import read_status
from dashboard.web.render import dashboard_of, render

log = logging.getLogger(__name__)


async def overview_context(request: Request[Any, Any, Any]) -> dict[str, Any]:
    dash = dashboard_of(request)
    status, error = await read_status(request)
    ctx: dict[str, Any] = {"status": status, "error": error}
    for section in dash.overview_sections:
        try:
            ctx.update(await section(dash))
        except Exception:
            log.exception("overview section %r failed", section)
    return ctx


class OverviewController(Controller):
    @get("/", name="overview")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "overview", await overview_context(request))

    @get("/api/overview", name="api_overview")
    async def api(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        status, error = await read_status(request)
        dash = dashboard_of(request)
        return Response(
            {
                "database": {"ok": dash.health.ok, "reason": dash.health.reason or None},
                "migrations": status.to_json() if status else {"error": error},
            }
        )
