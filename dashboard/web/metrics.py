"""GET /metrics: Prometheus text format, from in-process counters and the latest sample.

Public like /healthz: scrapers do not come through the identity proxy, and nothing here
names a user, a query or a backend. The registry is the dashboard's own (never the global
default one), built with it (`Dashboard.metrics`).
"""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from dashboard.pool.metrics import render


class MetricsController(Controller):
    opt = {"public": True}

    @get("/metrics", name="metrics", include_in_schema=False)
    async def metrics(
        self, metrics_registry: NamedDependency[CollectorRegistry]
    ) -> Response[bytes]:
        return Response(render(metrics_registry), media_type=CONTENT_TYPE_LATEST)
