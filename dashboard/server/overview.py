"""The Overview card of the server area (locks + connection budget), from the latest
snapshot only: the Overview page never makes the sampler query. The card says when that
snapshot was taken, and "unknown" (never green) when it cannot be trusted: the database
is unreachable, sampling fails, or the last sample is too old."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from dashboard.server.cards import locks_verdict, sample_time, server_unknown, split_reason
from dashboard.server.sampler import Sampler

OverviewSection = Callable[[Any], Awaitable[dict[str, Any]]]


def trust(sampler: Sampler | None, health: Any, now: float) -> str | None:
    """Why the sampler's latest snapshot cannot be trusted now (None: it can). `health`:
    the target database's reachability probe (dashboard/health.py), when there is one."""
    if sampler is None:
        return "no server sampler (no database configured)"
    snap = sampler.latest
    status = sampler.status()
    return server_unknown(
        database_ok=getattr(health, "ok", None),
        database_reason=str(getattr(health, "reason", "") or ""),
        sampler_error=sampler.last_error,
        sample_at=snap.taken_at if snap is not None else None,
        stale=bool(status["stale"]),
        now=now,
    )


def card_data(sampler: Sampler, health: Any = None, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    snap = sampler.latest
    status = sampler.status()
    unknown = trust(sampler, health, now)
    if snap is None:
        head, detail = split_reason(unknown or "no server sample taken yet")
        return {
            "ready": False,
            "sampler": status,
            "state": "unknown",
            "headline": f"unknown — {head}",
            "detail": detail,
            "unknown": unknown,
            "sampled": None,
        }
    locks = snap.locks_json()
    activity = snap.activity_json()
    roots = locks["roots"]
    top = roots[0] if roots else None
    idle_tx = activity["idle_in_transaction"]
    verdict = locks_verdict(
        unknown=unknown,
        blocked_count=locks["blocked_count"],
        idle_in_transaction_count=activity["idle_in_transaction_count"],
        long_running_count=activity["long_running_count"],
        warnings=len(activity["warnings"]),
    )
    return {
        "ready": True,
        "sampler": status,
        "state": verdict.state,
        "headline": verdict.headline,
        "detail": verdict.detail,
        "unknown": unknown,
        "sampled": sample_time(snap.taken_at, now),
        "blocked_count": locks["blocked_count"],
        "root_count": locks["root_count"],
        "longest_wait_s": locks["longest_wait_s"],
        "top_root": None
        if top is None
        else {
            "pid": top["pid"],
            "blast_radius": top["blast_radius"],
            "user": top.get("user"),
            "application_name": top.get("application_name"),
            "state": top.get("state"),
            "xact_age_s": top.get("xact_age_s"),
            "details_hidden": bool(top.get("query_note")),
        },
        "total": activity["total"],
        "usable": activity["usable_connections"],
        "max_connections": activity["max_connections"],
        "by_state": activity["by_state"],
        "budget_bar": activity["budget_bar"],
        "idle_in_transaction_count": activity["idle_in_transaction_count"],
        "oldest_idle_in_transaction_s": idle_tx[0]["xact_age_s"] if idle_tx else None,
        "long_running_count": activity["long_running_count"],
        "long_query_s": activity["long_query_s"],
        "warnings": activity["warnings"],
    }


def overview_section(sampler: Sampler) -> OverviewSection:
    async def locks_overview(dash: Any) -> dict[str, Any]:
        return {"locks_card": card_data(sampler, getattr(dash, "health", None))}

    return locks_overview
