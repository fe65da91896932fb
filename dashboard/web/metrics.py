"""GET /metrics: Prometheus text format, from in-process counters and the latest sample.

Public like /healthz: scrapers do not come through the identity proxy, and nothing here
names a user, a query or a backend.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from dashboard.pool.metrics import build_registry, render
from dashboard.web.render import dashboard_of

REGISTRY_KEY = "prometheus_registry"


def registry_for(request: Request[Any, Any, Any]) -> CollectorRegistry:
    """One CollectorRegistry per dashboard app (never the global default registry)."""
    dash = dashboard_of(request)
    reg = dash.extras.get(REGISTRY_KEY)
    if not isinstance(reg, CollectorRegistry):
        reg = build_registry(getattr(dash, "pools", None), lambda: getattr(dash, "sampler", None))
        dash.extras[REGISTRY_KEY] = reg
    return reg


class MetricsController(Controller):
    opt = {"public": True}

    @get("/metrics", name="metrics", include_in_schema=False)
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        body = render(registry_for(request))
        return Response(body, media_type=CONTENT_TYPE_LATEST)
