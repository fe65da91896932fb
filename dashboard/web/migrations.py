"""Migrations page and its JSON twin."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response, Template
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from dashboard.context import Dashboard
from dashboard.db import describe_error
from dashboard.migrations.status import MigrationStatus
from dashboard.runs.applied_by import AppliedBy, attribute
from dashboard.runs.errors import RunUnavailable
from dashboard.web.render import render

log = logging.getLogger(__name__)

APPLIED_BY_TIMEOUT_S = 3.0  # the page does not wait longer for the state database


async def read_status(dash: Dashboard) -> tuple[MigrationStatus | None, str]:
    if dash.status is None:
        return None, "no database configured (DASHBOARD_DATABASE_URL is not set)"
    try:
        return await dash.status.read(), ""
    except Exception as exc:
        dash.health.mark_failure(exc)
        return None, describe_error(exc)


async def read_applied_by(
    dash: Dashboard, status: MigrationStatus | None
) -> tuple[dict[str, AppliedBy] | None, str]:
    """Who applied each applied revision (from the dashboard's runs), or None and why
    it is unknown: never "outside the dashboard" when the runs could not be read."""
    if status is None or not status.applied:
        return {}, ""
    if dash.runs is None:
        return None, "the dashboard keeps no runs here (no state database)"
    revisions = [r.revision for r in status.applied]
    try:
        events = await asyncio.wait_for(
            dash.runs.repo.revision_events(dash.target.name, revisions), APPLIED_BY_TIMEOUT_S
        )
    except TimeoutError:
        return (
            None,
            f"the dashboard's state database did not answer within {APPLIED_BY_TIMEOUT_S:g} s",
        )
    except RunUnavailable as exc:
        return None, exc.message
    except Exception as exc:
        log.warning("who applied the revisions could not be read: %s", exc)
        return None, describe_error(exc)
    return attribute(revisions, events), ""


class MigrationsController(Controller):
    @get("/migrations", name="migrations")
    async def page(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Template:
        status, error = await read_status(dashboard)
        applied_by, applied_by_error = await read_applied_by(dashboard, status)
        return render(
            request,
            "migrations",
            {
                "status": status,
                "error": error,
                "applied_by": applied_by,
                "applied_by_error": applied_by_error,
            },
        )

    @get("/api/migrations", name="api_migrations")
    async def api(
        self, dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Response[dict[str, Any]]:
        status, error = await read_status(dashboard)
        if status is None:
            return Response(
                {"error": "database unreachable", "reason": error},
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
            )
        applied_by, applied_by_error = await read_applied_by(dashboard, status)
        data = status.to_json()
        data["applied_by"] = (
            {rev: a.to_json() for rev, a in applied_by.items()} if applied_by is not None else None
        )
        data["applied_by_error"] = applied_by_error or None
        return Response(data)
