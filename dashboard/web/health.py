"""Liveness and readiness.

`/readyz` is 200 while the target database answers (what every live page needs), 503 with
the reason otherwise. With the dashboard's schema in another database
(DASHBOARD_STATE_DATABASE_URL) it checks both and names the one that does not answer:
with only the state database down it stays 200, `"status": "degraded"`, since the live
pages still work (runs, audit, history and password logins do not).
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response

from dashboard.context import Dashboard
from dashboard.health import Health


async def probe(health: Health) -> dict[str, Any]:
    ok, reason = await health.check(timeout_s=2.0)
    return {"ok": ok, "reason": reason or None}


class HealthController(Controller):
    opt = {"public": True}

    @get("/healthz", name="healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", name="readyz")
    async def readyz(
        self, dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Response[dict[str, Any]]:
        target, state = dashboard.health, dashboard.state_health
        if state is None:
            ok, reason = await target.check(timeout_s=2.0)
            if ok:
                return Response({"status": "ready"})
            return Response({"status": "unavailable", "reason": reason}, status_code=503)
        target_probe, state_probe = await asyncio.gather(probe(target), probe(state))
        databases = {"target": target_probe, "state": state_probe}
        down = [h.describe() for h in (target, state) if h.ok is False]
        body: dict[str, Any] = {"databases": databases}
        if not down:
            return Response({"status": "ready", **body})
        body["reason"] = "; ".join(down)
        if target.ok is False:
            return Response({"status": "unavailable", **body}, status_code=503)
        return Response({"status": "degraded", **body})
