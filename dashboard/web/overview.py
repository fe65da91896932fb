"""Overview: one card per area, each filled by that area's registered section."""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Response, Template

from dashboard.context import Dashboard
from dashboard.migrations.status import MigrationStatus
from dashboard.server.cards import sample_time, schema_state, split_reason
from dashboard.web.migrations import read_status
from dashboard.web.render import is_htmx, render

log = logging.getLogger(__name__)


def schema_card(
    status: MigrationStatus | None, error: str, now: float, *, configured: bool = True
) -> dict[str, Any]:
    """The Schema card's state (ok|warn|alarm|unknown) and when its figures were read."""
    unknown = None
    if status is None:
        head, detail = split_reason(f"database unreachable: {error}" if configured else error)
        unknown = {"headline": f"unknown — {head}", "detail": detail}
    return {
        "unknown": unknown,
        "state": schema_state(
            status.state if status else None,
            script_errors=len(status.script_errors) if status else 0,
        ),
        "read": sample_time(status.read_at, now) if status else None,
        "tried": sample_time(now, now, live=True),
    }


async def overview_context(dash: Dashboard) -> dict[str, Any]:
    status, error = await read_status(dash)
    ctx: dict[str, Any] = {
        "status": status,
        "error": error,
        "schema_card": schema_card(status, error, time.time(), configured=dash.status is not None),
    }
    for section in dash.overview_sections:
        try:
            ctx.update(await section(dash))
        except Exception:
            log.exception("overview section %r failed", section)
    return ctx


class OverviewController(Controller):
    @get("/", name="overview")
    async def page(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Template:
        ctx = await overview_context(dashboard)
        ctx["oob_banners"] = is_htmx(request)
        return render(request, "overview", ctx)

    @get("/api/overview", name="api_overview")
    async def api(
        self, dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Response[dict[str, Any]]:
        ctx = await overview_context(dashboard)
        status = ctx["status"]
        health = dashboard.health
        return Response(
            {
                "database": {"ok": health.ok, "reason": health.reason or None},
                "migrations": status.to_json() if status else {"error": ctx["error"]},
                "cards": cards_json(ctx),
            }
        )


def cards_json(ctx: dict[str, Any]) -> dict[str, Any]:
    """Each Overview card's state, headline and sample time (the page's JSON twin)."""

    def when(t: Any) -> Any:
        return t.to_json() if t is not None else None

    out: dict[str, Any] = {
        "schema": {
            "state": ctx["schema_card"]["state"],
            "unknown": ctx["schema_card"]["unknown"],
            "read": when(ctx["schema_card"]["read"]),
        }
    }
    locks = ctx.get("locks_card")
    if locks is not None:
        out["locks"] = {
            "state": locks["state"],
            "headline": locks["headline"],
            "detail": locks.get("detail"),
            "blocked_count": locks.get("blocked_count"),
            "sampled": when(locks.get("sampled")),
        }
    pool = ctx.get("pool_card")
    if pool is not None:
        out["pool"] = {
            "state": pool["state"],
            "pools": [
                {
                    k: p[k]
                    for k in (
                        "name",
                        "state",
                        "headline",
                        "detail",
                        "notes",
                        "stuck",
                        "checked_out",
                        "limit",
                        "waiting",
                        "timeouts_total",
                    )
                }
                for p in pool["pools"]
            ],
            "counts_read": when(pool["counts_read"]),
            "lock_sample": when(pool["lock_sample"]),
            "lock_state_unknown": pool["lock_state_unknown"],
        }
    return out
