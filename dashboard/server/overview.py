"""The Overview card of the server area (locks + connection budget), from the latest
snapshot only: the Overview page never makes the sampler query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dashboard.server.sampler import Sampler

OverviewSection = Callable[[Any], Awaitable[dict[str, Any]]]


def card_data(sampler: Sampler) -> dict[str, Any]:
    snap = sampler.latest
    status = sampler.status()
    if snap is None:
        return {"ready": False, "sampler": status}
    locks = snap.locks_json()
    activity = snap.activity_json()
    roots = locks["roots"]
    top = roots[0] if roots else None
    idle_tx = activity["idle_in_transaction"]
    return {
        "ready": True,
        "sampler": status,
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
        return {"locks_card": card_data(sampler)}

    return locks_overview
