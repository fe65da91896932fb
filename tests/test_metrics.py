"""GET /metrics, parsed with prometheus-client's own parser; one registry per app."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard.app import create_app
from dashboard.settings import Settings


def app_for(db_url: str, engine: AsyncEngine) -> Any:
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "0.3",
        }
    )
    return create_app(settings, engines={"main": engine})


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict[Any, float], name: str, **labels: str) -> float:
    return parsed[(name, tuple(sorted(labels.items())))]


async def scrape(client: AsyncTestClient[Any]) -> dict[Any, float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_metrics_follow_otel_names_and_pool_state(db_url: str) -> None:
    engine = create_async_engine(db_url, pool_size=2, max_overflow=1, pool_timeout=0.3)
    app = app_for(db_url, engine)
    try:
        async with AsyncTestClient(app) as client:
            a = await engine.connect()
            b = await engine.connect()
            await a.execute(text("SELECT 1"))
            m = await scrape(client)
            p = {"pool_name": "main"}
            assert value(m, "db_client_connection_count", state="used", **p) == 2
            assert value(m, "db_client_connection_count", state="idle", **p) == 0
            assert value(m, "db_client_connection_max", **p) == 3
            assert value(m, "db_client_connection_idle_max", **p) == 2
            assert value(m, "db_client_connection_pending_requests", **p) == 0
            assert value(m, "db_client_connection_timeouts_total", **p) == 0
            assert value(m, "db_client_connection_wait_time_seconds_count", **p) == 2
            assert value(m, "db_client_connection_wait_time_seconds_bucket", le="+Inf", **p) == 2
            assert value(m, "dashboard_pool_checkouts_total", **p) == 2
            assert value(m, "dashboard_pool_peak_checked_out", **p) == 2

            # exhaust it: one more is overflow, the next one queues and times out
            c = await engine.connect()
            waiter = asyncio.create_task(_checkout(engine))
            for _ in range(100):
                m = await scrape(client)
                if value(m, "db_client_connection_pending_requests", **p) == 1:
                    break
                await asyncio.sleep(0.01)
            assert value(m, "db_client_connection_pending_requests", **p) == 1
            assert value(m, "dashboard_pool_overflow", **p) == 1
            assert await waiter == "timed out"
            m = await scrape(client)
            assert value(m, "db_client_connection_timeouts_total", **p) == 1
            buckets = {
                k[1]: v
                for k, v in m.items()
                if k[0] == "db_client_connection_wait_time_seconds_bucket"
            }
            le = {dict(lbl)["le"]: v for lbl, v in buckets.items()}
            assert le["0.1"] == 3 and le["0.5"] == 3  # the one that waited never got one
            for conn in (a, b, c):
                await conn.close()

            # server gauges come from the sampler's snapshot
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                m = await scrape(client)
                if value(m, "dashboard_pg_sampler_up") == 1:
                    break
                await asyncio.sleep(0.05)
            assert value(m, "dashboard_pg_sampler_up") == 1
            assert value(m, "dashboard_pg_max_connections") > 0
            assert any(k[0] == "dashboard_pg_sessions" for k in m)
    finally:
        await engine.dispose()


async def _checkout(engine: AsyncEngine) -> str:
    from sqlalchemy import exc

    try:
        async with engine.connect():
            return "served"
    except exc.TimeoutError:
        return "timed out"


async def test_two_apps_in_one_process_do_not_collide(db_url: str) -> None:
    e1 = create_async_engine(db_url, pool_size=1)
    e2 = create_async_engine(db_url, pool_size=4)
    try:
        async with (
            AsyncTestClient(app_for(db_url, e1)) as c1,
            AsyncTestClient(app_for(db_url, e2)) as c2,
        ):
            async with e2.connect() as conn:
                await conn.execute(text("SELECT 1"))
                m1, m2 = await scrape(c1), await scrape(c2)
            assert value(m1, "db_client_connection_idle_max", pool_name="main") == 1
            assert value(m2, "db_client_connection_idle_max", pool_name="main") == 4
            assert value(m1, "db_client_connection_count", pool_name="main", state="used") == 0
            assert value(m2, "db_client_connection_count", pool_name="main", state="used") == 1
            # every family appears once per body (no duplicate registration)
            r = await c1.get("/metrics")
            helps = [ln for ln in r.text.splitlines() if ln.startswith("# HELP ")]
            assert len(helps) == len(set(helps))
    finally:
        await e1.dispose()
        await e2.dispose()


async def test_metrics_is_public_but_pages_are_not(db_url: str) -> None:
    engine = create_async_engine(db_url, pool_size=1)
    settings = Settings.from_env({"DASHBOARD_DATABASE_URL": db_url})  # proxy mode
    try:
        async with AsyncTestClient(create_app(settings, engines={"main": engine})) as client:
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/api/pool")).status_code == 401
    finally:
        await engine.dispose()
