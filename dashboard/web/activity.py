"""Activity page (connection budget, sessions) and its JSON twin."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response, Template

from dashboard.context import Dashboard
from dashboard.server.sampler import Sampler
from dashboard.web.locks import latest_snapshot, panel_context, unavailable
from dashboard.web.render import render


class ActivityController(Controller):
    @get("/activity", name="activity")
    async def page(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        sampler: NamedDependency[Sampler | None],
    ) -> Template:
        snap = await latest_snapshot(sampler)
        ctx = panel_context(request, dashboard.settings, sampler, snap)
        if snap is not None:
            ctx["activity"] = snap.activity_json()
        return render(request, "activity", ctx)

    @get("/api/activity", name="api_activity")
    async def api(self, sampler: NamedDependency[Sampler | None]) -> Response[dict[str, Any]]:
        snap = await latest_snapshot(sampler)
        if sampler is None or snap is None:
            return unavailable(sampler)
        return Response({**snap.activity_json(), "sampler": sampler.status()})
