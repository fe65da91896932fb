"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Response

from dashboard.web.render import dashboard_of


class HealthController(Controller):
    opt = {"public": True}

    @get("/healthz", name="healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", name="readyz")
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        ok, reason = await dashboard_of(request).health.check(timeout_s=2.0)
        if ok:
            return Response({"status": "ready"})
        return Response({"status": "unavailable", "reason": reason}, status_code=503)
