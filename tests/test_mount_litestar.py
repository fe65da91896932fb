"""The dashboard mounted into a Litestar application that owns the pool."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, get
from litestar.params import FromPath
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dashboard import create_app
from dashboard.pool.mount import litestar_mount
from dashboard.settings import Settings


async def test_litestar_host_mounts_the_dashboard(db_url: str) -> None:
    engine = create_async_engine(db_url, pool_size=3, max_overflow=2)
    ops = create_app(Settings(auth_mode="none"), engines={"main": engine})
    release = asyncio.Event()

    @get("/reports/{n:int}")
    async def report(n: FromPath[int]) -> dict[str, int]:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_sleep(0)"))
            await release.wait()
        return {"n": n}

    @asynccontextmanager
    async def ops_lifespan(app: Litestar) -> AsyncIterator[None]:
        async with ops.lifespan():
            yield
        await engine.dispose()

    host = Litestar(route_handlers=[litestar_mount(ops, "/ops"), report], lifespan=[ops_lifespan])
    # httpx's ASGITransport (not Litestar's test client, which serves one request at a
    # time from another thread): the held request and the dashboard run concurrently.
    # (Litestar types its ASGI callable more narrowly than httpx does)
    transport = httpx.ASGITransport(app=host)  # type: ignore[arg-type]
    async with (
        host.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://host.test") as client,
    ):
        pending = asyncio.create_task(client.get("/reports/3"))
        pool: dict[str, Any] = {}
        for _ in range(200):
            pool = (await client.get("/ops/api/pool")).json()["pools"][0]
            if pool["connections"]:
                break
            await asyncio.sleep(0.02)
        (row,) = pool["connections"]
        assert row["request"] == "GET /reports/3"
        assert row["origin"].startswith("tests/test_mount_litestar.py:")
        assert row["origin"].endswith("in test_litestar_host_mounts_the_dashboard.<locals>.report")
        assert row["in_transaction"] is True
        assert pool["size"] == 3 and pool["max_overflow"] == 2

        page = await client.get("/ops/pool")
        assert page.status_code == 200
        links = re.findall(r'(?:href|hx-get|src)="([^"]+)"', page.text)
        assert "/ops/static/style.css" in links and "/ops/pool" in links
        assert all(link.startswith("/ops") for link in links if link.startswith("/"))
        assert (await client.get("/ops/static/app.js")).status_code == 200
        release.set()
        assert (await pending).json() == {"n": 3}
