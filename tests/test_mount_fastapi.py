"""The dashboard mounted into a FastAPI application that owns the pool (the README
example), driven through httpx's ASGITransport with the host's own lifespan."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard import create_app
from dashboard.settings import Settings


def host_app(db_url: str, *, forward_lifespan: bool = True) -> tuple[FastAPI, AsyncEngine, Any]:
    # --- this is the README example, plus test-only settings and a slow endpoint ------
    engine = create_async_engine(
        db_url,
        pool_size=2,
        max_overflow=0,
        connect_args={"server_settings": {"application_name": "shop-api"}},
    )
    ops = create_app(Settings(auth_mode="none"), engines={"main": engine})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ops.lifespan():  # Starlette does not start mounted apps by itself
            yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan if forward_lifespan else None)
    app.mount("/ops", ops)  # type: ignore[arg-type]  # Litestar types ASGI more narrowly
    # ---------------------------------------------------------------------------------
    release = asyncio.Event()
    app.state.release = release

    @app.get("/orders/{order_id}")
    async def slow_order(order_id: int) -> dict[str, int]:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await release.wait()
        return {"order_id": order_id}

    return app, engine, release


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")


async def wait_checked_out(client: httpx.AsyncClient, n: int) -> dict[str, Any]:
    for _ in range(200):
        body = (await client.get("/ops/api/pool")).json()
        pool = body["pools"][0]
        if pool["checked_out"] == n and len(pool["connections"]) == n:
            return pool  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {n} checked out")


async def test_fastapi_host_shows_its_own_pool(db_url: str) -> None:
    app, engine, release = host_app(db_url)
    async with app.router.lifespan_context(app), client_for(app) as client:
        order = asyncio.create_task(client.get("/orders/7"))
        pool = await wait_checked_out(client, 1)
        assert pool["name"] == "main" and pool["size"] == 2 and pool["max_overflow"] == 0
        (row,) = pool["connections"]
        # the host's request, its handler's line, and the backend serving it
        assert row["request"] == "GET /orders/7"
        assert row["origin"].startswith("tests/test_mount_fastapi.py:")
        assert row["origin"].endswith("in host_app.<locals>.slow_order")
        assert isinstance(row["backend_pid"], int)
        assert pool["application_names"] == ["shop-api"]

        # pages, links and static files work under the mount prefix
        page = await client.get("/ops/pool")
        assert page.status_code == 200
        assert 'href="/ops/static/style.css"' in page.text
        assert 'hx-get="/ops/pool"' in page.text
        links = re.findall(r'href="([^"]+)"', page.text)
        assert "/ops/pool" in links and "/ops/locks" in links
        assert all(link.startswith("/ops") for link in links if link.startswith("/"))
        assert f'href="/ops/pool/main/connections/{row["id"]}"' in page.text
        css = await client.get("/ops/static/style.css")
        assert css.status_code == 200 and ".pool-chart" in css.text
        detail = await client.get(f"/ops/pool/main/connections/{row['id']}")
        assert detail.status_code == 200 and "GET /orders/7" in detail.text

        metrics = await client.get("/ops/metrics")
        names = {f.name for f in text_string_to_metric_families(metrics.text)}
        assert {"db_client_connection_count", "db_client_connection_pending_requests"} <= names

        release.set()
        assert (await order).json() == {"order_id": 7}
        pool = await wait_checked_out(client, 0)
        assert pool["connections"] == [] and pool["checked_in"] == 1
        # the host's own routes are untouched
        assert (await client.get("/docs")).status_code == 200


async def test_plain_mount_without_lifespan_still_answers(db_url: str) -> None:
    """Starlette's `mount` never starts the sub-app: the pool view must not depend on it."""
    app, engine, release = host_app(db_url, forward_lifespan=False)
    try:
        async with client_for(app) as client:
            order = asyncio.create_task(client.get("/orders/1"))
            pool = await wait_checked_out(client, 1)
            assert pool["connections"][0]["request"] == "GET /orders/1"
            assert (await client.get("/ops/pool")).status_code == 200
            release.set()
            await order
            # the first request started the dashboard's own services lazily: readiness,
            # the server sampler and the schema status all work without lifespan events
            assert (await client.get("/ops/readyz")).status_code == 200
            for _ in range(300):
                r = await client.get("/ops/api/locks")
                locks = r.json()
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert "blocked_count" in locks
            assert (await client.get("/ops/api/migrations")).status_code == 200
    finally:
        await engine.dispose()
