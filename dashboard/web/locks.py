"""Locks page (blocking tree) and its JSON twin. Reads the sampler's latest snapshot only."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Response, Template
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from dashboard.auth.guards import identity_of
from dashboard.auth.roles import at_least
from dashboard.server.sampler import Sampler
from dashboard.server.snapshot import Snapshot
from dashboard.web.render import dashboard_of, render

NO_DATABASE = "no database configured (DASHBOARD_DATABASE_URL is not set)"


def sampler_of(request: Request[Any, Any, Any]) -> Sampler | None:
    sampler: Sampler | None = dashboard_of(request).sampler
    return sampler


async def latest_snapshot(
    request: Request[Any, Any, Any],
) -> tuple[Sampler | None, Snapshot | None]:
    sampler = sampler_of(request)
    if sampler is None:
        return None, None
    return sampler, await sampler.wait_ready()


def unavailable(sampler: Sampler | None) -> Response[dict[str, Any]]:
    reason = NO_DATABASE if sampler is None else (sampler.last_error or "no sample taken yet")
    return Response(
        {
            "error": f"server activity unavailable: {reason}",
            "status_code": HTTP_503_SERVICE_UNAVAILABLE,
            "sampler": sampler.status() if sampler else None,
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
    )


def action_rights(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """What the viewer may do, so the page only offers buttons that will work."""
    dash = dashboard_of(request)
    ident = identity_of(request)
    disabled = dash.settings.disable_kill
    return {
        "kill_disabled": disabled,
        "may_cancel": not disabled and ident.authenticated and at_least(ident.role, "operator"),
        "may_terminate": not disabled and ident.authenticated and at_least(ident.role, "admin"),
    }


def panel_context(
    request: Request[Any, Any, Any], sampler: Sampler | None, snap: Snapshot | None
) -> dict[str, Any]:
    dash = dashboard_of(request)
    ctx: dict[str, Any] = {
        "snap": snap,
        "sampler": sampler.status() if sampler else {"ok": False, "error": NO_DATABASE},
        "poll_s": max(1, round(dash.settings.sample_interval_s)),
        **action_rights(request),
    }
    return ctx


class LocksController(Controller):
    @get("/locks", name="locks")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        sampler, snap = await latest_snapshot(request)
        ctx = panel_context(request, sampler, snap)
        if snap is not None:
            ctx["locks"] = snap.locks_json()
            ctx["groups"] = snap.lock_groups()
        return render(request, "locks", ctx)

    @get("/api/locks", name="api_locks")
    async def api(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        sampler, snap = await latest_snapshot(request)
        if sampler is None or snap is None:
            return unavailable(sampler)
        return Response({**snap.locks_json(), "sampler": sampler.status()})
