"""Pool page, its JSON twin, one checked-out connection (full stack), one freeze-frame.

Everything is read in process from the pool registry and the sampler's latest snapshot:
these handlers answer while the observed pool is exhausted.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, SkipValidation
from litestar.response import Response, Template

from dashboard.context import Dashboard
from dashboard.pool.registry import PoolRegistry
from dashboard.pool.view import connection_row
from dashboard.web.render import base_context, render

NO_POOLS = "no pool is observed (no DASHBOARD_DATABASE_URL and no engines passed to create_app)"


def connection_detail(pools: PoolRegistry, pool: str, conn_id: int) -> dict[str, Any]:
    inst = pools.instruments.get(pool)
    if inst is None:
        raise NotFoundException(detail=f"no pool named {pool!r}")
    entry = inst.entry(conn_id)
    if entry is None:
        raise NotFoundException(
            detail=f"connection #{conn_id} of pool {pool!r} is not checked out any more"
        )
    row = connection_row(
        entry, pools.snapshot(), leak_threshold_s=pools.leak_threshold_s, with_stack=True
    )
    from dashboard.pool.origin import holder_now

    row["holder_now"] = [f.to_json() for f in holder_now(entry.task())]
    row["pool"] = pool
    return row


class PoolController(Controller):
    @get("/pool", name="pool")
    async def page(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        pools: NamedDependency[PoolRegistry | None],
    ) -> Template:
        ctx: dict[str, Any] = {"error": None if pools else NO_POOLS}
        if pools is not None:
            ctx.update(pools.page())
        ctx["poll_s"] = max(1, round(dashboard.settings.sample_interval_s))
        return render(request, "pool", ctx)

    @get("/api/pool", name="api_pool")
    async def api(self, pools: NamedDependency[PoolRegistry | None]) -> dict[str, Any]:
        if pools is None:
            return {
                "pools": [],
                "instances": [],
                "freeze_frames": [],
                "capacity": [],
                "note": NO_POOLS,
            }
        return pools.api()

    @get("/pool/{pool:str}/connections/{conn_id:int}", name="pool_connection")
    async def connection_page(
        self,
        request: Request[Any, Any, Any],
        pool: FromPath[str],
        conn_id: FromPath[int],
        pools: NamedDependency[PoolRegistry | None],
    ) -> Template:
        if pools is None:
            raise NotFoundException(detail=NO_POOLS)
        ctx = base_context(request, "pool")
        ctx["c"] = connection_detail(pools, pool, conn_id)
        ctx["leak_threshold_s"] = pools.leak_threshold_s
        return Template(template_name="pool/connection.html", context=ctx)

    @get("/api/pool/{pool:str}/connections/{conn_id:int}", name="api_pool_connection")
    async def connection_api(
        self,
        pool: FromPath[str],
        conn_id: FromPath[int],
        pools: NamedDependency[PoolRegistry | None],
    ) -> dict[str, Any]:
        if pools is None:
            raise NotFoundException(detail=NO_POOLS)
        return connection_detail(pools, pool, conn_id)

    @get("/pool/freeze/{frame_id:int}", name="pool_freeze")
    async def freeze_page(
        self,
        request: Request[Any, Any, Any],
        frame_id: FromPath[int],
        pools: NamedDependency[PoolRegistry | None],
    ) -> Template:
        frame = pools.frames.get(frame_id) if pools is not None else None
        if frame is None:
            raise NotFoundException(
                detail=f"no freeze-frame #{frame_id} (only the last few are kept)"
            )
        ctx = base_context(request, "pool")
        ctx["frame"] = frame
        return Template(template_name="pool/freeze.html", context=ctx)

    @get("/api/pool/freeze-frames/{frame_id:int}", name="api_pool_freeze")
    async def freeze_api(
        self, frame_id: FromPath[int], pools: NamedDependency[PoolRegistry | None]
    ) -> Response[dict[str, Any]]:
        frame = pools.frames.get(frame_id) if pools is not None else None
        if frame is None:
            raise NotFoundException(
                detail=f"no freeze-frame #{frame_id} (only the last few are kept)"
            )
        return Response(frame.to_json())
