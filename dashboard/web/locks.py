"""Locks page (blocking tree) and its JSON twin. Reads the sampler's latest snapshot only."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response, Template
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from dashboard.auth.guards import identity_of
from dashboard.auth.roles import at_least
from dashboard.context import Dashboard
from dashboard.server.sampler import Sampler
from dashboard.server.snapshot import Snapshot
from dashboard.settings import Settings
from dashboard.web.deps import NO_DATABASE
from dashboard.web.render import render


async def latest_snapshot(sampler: Sampler | None) -> Snapshot | None:
    return None if sampler is None else await sampler.wait_ready()


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


def action_rights(request: Request[Any, Any, Any], settings: Settings) -> dict[str, Any]:
    """What the viewer may do, so the page only offers buttons that will work."""
    ident = identity_of(request)
    disabled = settings.disable_kill
    return {
        "kill_disabled": disabled,
        "may_cancel": not disabled and ident.authenticated and at_least(ident.role, "operator"),
        "may_terminate": not disabled and ident.authenticated and at_least(ident.role, "admin"),
    }


def panel_context(
    request: Request[Any, Any, Any],
    settings: Settings,
    sampler: Sampler | None,
    snap: Snapshot | None,
) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "snap": snap,
        "sampler": sampler.status() if sampler else {"ok": False, "error": NO_DATABASE},
        "poll_s": max(1, round(settings.sample_interval_s)),
        **action_rights(request, settings),
    }
    return ctx


class LocksController(Controller):
    @get("/locks", name="locks")
    async def page(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        sampler: NamedDependency[Sampler | None],
    ) -> Template:
        snap = await latest_snapshot(sampler)
        ctx = panel_context(request, dashboard.settings, sampler, snap)
        if snap is not None:
            ctx["locks"] = snap.locks_json()
            ctx["groups"] = snap.lock_groups()
        return render(request, "locks", ctx)

    @get("/api/locks", name="api_locks")
    async def api(self, sampler: NamedDependency[Sampler | None]) -> Response[dict[str, Any]]:
        snap = await latest_snapshot(sampler)
        if sampler is None or snap is None:
            return unavailable(sampler)
        return Response({**snap.locks_json(), "sampler": sampler.status()})
