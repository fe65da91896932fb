"""Litestar dependencies: how controllers receive the dashboard's services, typed.

Registered once on the app (`DEPENDENCIES`, see dashboard/app.py); a handler declares the
key as a parameter marked `NamedDependency[T]` (Litestar 2.23+; unmarked, inferred
dependencies are deprecated). The providers:

- required (`store`, `audit_reader`): the service, or a 503 with a clear reason when the
  dashboard has no database; the handler never sees `None`;
- optional (`audit`, `sampler`, `pools`): `X | None`, for handlers that still answer
  without it (a page that says what is missing, a login that is only logged);
- always there: `dashboard`, `login_limiter`, `metrics_registry`.

`Dashboard` is a dataclass whose fields msgspec cannot describe (IP networks, engines),
so handlers take it as `NamedDependency[SkipValidation[Dashboard]]`; the services are
plain classes, checked with isinstance as usual.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CollectorRegistry

from dashboard.approvals.service import Approvals
from dashboard.audit.log import AuditLog
from dashboard.audit.repo import AuditRepository
from dashboard.auth.ratelimit import LoginLimiter
from dashboard.context import Dashboard
from dashboard.pool.registry import PoolRegistry
from dashboard.runs.service import RunService
from dashboard.server.sampler import Sampler
from dashboard.state.store import StateStore

NO_DATABASE = "no database configured (DASHBOARD_DATABASE_URL is not set)"
NO_STATE = f"{NO_DATABASE}: the dashboard's own state (runs, approvals, audit) is unavailable"
NO_AUDIT = f"{NO_DATABASE}: the audit log is unavailable"
NO_RUNS = f"{NO_DATABASE}: runs are unavailable"


def not_configured(reason: str) -> HTTPException:
    return HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=reason)


def provide_dashboard(request: Request[Any, Any, Any]) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def provide_state(request: Request[Any, Any, Any]) -> StateStore:
    store = provide_dashboard(request).state
    if store is None:
        raise not_configured(NO_STATE)
    return store


def audit_reader_of(dash: Dashboard) -> AuditRepository | None:
    return AuditRepository(dash.state) if dash.state is not None else None


def provide_audit_reader(request: Request[Any, Any, Any]) -> AuditRepository:
    reader = audit_reader_of(provide_dashboard(request))
    if reader is None:
        raise not_configured(NO_AUDIT)
    return reader


def provide_audit(request: Request[Any, Any, Any]) -> AuditLog | None:
    return provide_dashboard(request).audit


def provide_runs(request: Request[Any, Any, Any]) -> RunService:
    runs = provide_dashboard(request).runs
    if runs is None:
        raise not_configured(NO_RUNS)
    return runs


def provide_approvals(runs: NamedDependency[RunService]) -> Approvals:
    return Approvals(runs)


def provide_sampler(request: Request[Any, Any, Any]) -> Sampler | None:
    return provide_dashboard(request).sampler


def provide_pools(request: Request[Any, Any, Any]) -> PoolRegistry | None:
    return provide_dashboard(request).pools


def provide_login_limiter(request: Request[Any, Any, Any]) -> LoginLimiter:
    return provide_dashboard(request).login_limiter


def provide_metrics_registry(request: Request[Any, Any, Any]) -> CollectorRegistry:
    return provide_dashboard(request).metrics


DEPENDENCIES: dict[str, Provide] = {
    "dashboard": Provide(provide_dashboard, sync_to_thread=False),
    "store": Provide(provide_state, sync_to_thread=False),
    "audit_reader": Provide(provide_audit_reader, sync_to_thread=False),
    "audit": Provide(provide_audit, sync_to_thread=False),
    "runs": Provide(provide_runs, sync_to_thread=False),
    "approvals": Provide(provide_approvals, sync_to_thread=False),
    "sampler": Provide(provide_sampler, sync_to_thread=False),
    "pools": Provide(provide_pools, sync_to_thread=False),
    "login_limiter": Provide(provide_login_limiter, sync_to_thread=False),
    "metrics_registry": Provide(provide_metrics_registry, sync_to_thread=False),
}
