"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response

from dashboard.context import Dashboard


class HealthController(Controller):
    opt = {"public": True}

    @get("/healthz", name="healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", name="readyz")
    async def readyz(
        self, dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Response[dict[str, Any]]:
        ok, reason = await dashboard.health.check(timeout_s=2.0)
        if ok:
            return Response({"status": "ready"})
        return Response({"status": "unavailable", "reason": reason}, status_code=503)
