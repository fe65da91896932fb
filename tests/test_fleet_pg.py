"""The fleet over a real PostgreSQL: every process publishes its pools to the shared state
and every Pool page shows every live process of every service.

- two real `dashboard serve` processes of one service and a third of another service
  (plus rows written as other processes would: one stale, one gone for minutes, one
  gone for days), each listing the others in `/api/pool` and on the Pool page, and the
  capacity check counting what it sees;
- two replicas of a FastAPI application, each mounting the dashboard with its own engine,
  appear together (with the ledger and the waiters of one seen from the other);
- the state database down: no crash, the fleet view says it is unavailable, this
  process's pool is still shown and the capacity check falls back to DASHBOARD_REPLICAS.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard import create_app
from dashboard.settings import Settings
from tests.lock_chain import app_for, refresh
from tests.tcp_proxy import ThreadedPgProxy
from tests.test_state_roles import as_role, fresh_roles
from tests.waiting import wait_until_async

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def by_name(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["service"], i["instance"]): i for i in body["instances"]}


def budget(body: dict[str, Any]) -> dict[str, Any]:
    (found,) = [f for f in body["capacity"] if f["key"] == "budget"]
    return found  # type: ignore[no-any-return]


def dashboard_reserve(finding: dict[str, Any]) -> int:
    """The per-process reservation for the dashboard, as the finding's formula states it."""
    m = re.search(r"\+ (\d+) for the dashboard", finding["text"])
    assert m, finding["text"]
    return int(m.group(1))


def page_instances(html: str) -> dict[str, dict[str, str]]:
    """data-* attributes of the fleet table rows of a Pool page, by instance."""
    out: dict[str, dict[str, str]] = {}
    for row in re.findall(r'<tr class="fleet-row[^"]*"([^>]*)>', html):
        attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', row))
        out.setdefault(attrs["instance"], attrs)
    return out


# --- two (and three) real processes --------------------------------------------------------


@contextmanager
def serve(
    db_url: str, service: str, instance: str, log_file: Path, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m dashboard.cli serve` on a free loopback port; yields (process, base URL)."""
    port = free_port()
    full = dict(os.environ) | {
        "DASHBOARD_DATABASE_URL": db_url,
        "DASHBOARD_AUTH_MODE": "none",
        "DASHBOARD_SECRET_KEY": "s" * 32,
        "DASHBOARD_SERVICE_NAME": service,
        "DASHBOARD_INSTANCE_NAME": instance,
        "DASHBOARD_SAMPLE_INTERVAL_S": "0.5",
        "PYTHONPATH": str(ROOT),
    }
    full.update(env)
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "serve"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


async def pool_of(
    http: httpx.AsyncClient, base: str, proc: subprocess.Popen[bytes], log_file: Path
) -> dict[str, Any] | None:
    assert proc.poll() is None, log_file.read_text(errors="replace")
    try:
        r = await http.get(f"{base}/api/pool")
    except httpx.TransportError:
        return None  # still starting
    return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]


def old_row(size: int) -> str:
    """A pool as another process (sampling every 0.5 s) would have published it."""
    return json.dumps(
        [
            {
                "name": "main",
                "pool_class": "AsyncAdaptedQueuePool",
                "size": size,
                "max_overflow": 0,
                "limit": size,
                "checked_out": 1,
                "checked_in": 0,
                "waiting": 0,
                "timeouts_total": 2,
                "connections": [{"backend_pid": 4242, "held_for_s": 3.5, "origin": "app.py:9"}],
                "sample_interval_s": 0.5,
            }
        ]
    )


async def test_processes_publish_their_pools_and_each_sees_all(
    db_url: str, plain_db_url: str, tmp_path: Path
) -> None:
    shop = {"DASHBOARD_POOL_SIZE": "2", "DASHBOARD_MAX_OVERFLOW": "1"}
    logs = {name: tmp_path / f"{name}.log" for name in ("shop-1", "shop-2", "billing-1")}
    with (
        serve(db_url, "shop", "shop-1", logs["shop-1"], **shop) as (p1, base1),
        serve(db_url, "shop", "shop-2", logs["shop-2"], **shop) as (p2, base2),
    ):
        async with httpx.AsyncClient(timeout=10) as http:

            async def both_listed(proc: Any, base: str, log: Path) -> dict[str, Any] | None:
                body = await pool_of(http, base, proc, log)
                if body is None or not body["fleet"]["available"]:
                    return None
                names = set(by_name(body))
                return body if {("shop", "shop-1"), ("shop", "shop-2")} <= names else None

            one = await wait_until_async(
                lambda: both_listed(p1, base1, logs["shop-1"]),
                timeout_s=60,
                what="shop-1 listing both shop instances",
            )
            two = await wait_until_async(
                lambda: both_listed(p2, base2, logs["shop-2"]),
                timeout_s=60,
                what="shop-2 listing both shop instances",
            )
            for body, me, other in ((one, "shop-1", "shop-2"), (two, "shop-2", "shop-1")):
                insts = by_name(body)
                assert insts[("shop", me)]["this_process"] is True
                assert insts[("shop", other)]["this_process"] is False
                (pool,) = insts[("shop", other)]["pools"]
                # the same shape as "pools", plus the pool's settings
                assert pool["name"] == "main" and pool["size"] == 2 and pool["max_overflow"] == 1
                assert pool["settings"]["pool_timeout"] == 30.0
                assert pool["settings"]["class"] == pool["pool_class"]
                for key in ("checked_in", "checked_out", "overflow", "waiting", "timeouts_total"):
                    assert isinstance(pool[key], int), key
                assert pool["connections"] == []
                assert isinstance(insts[("shop", other)]["reported_at"], str)
                assert body["instances"][0]["instance"] == me  # this process first

            # rows as other processes left them: stale, gone for minutes, gone for days
            conn = await asyncpg.connect(plain_db_url)
            try:
                await conn.execute(
                    "INSERT INTO dashboard.fleet_pools (service, instance, reported_at, pools) "
                    "VALUES ('shop', 'shop-old', now() - interval '20 seconds', $1::jsonb),"
                    " ('shop', 'shop-left', now() - interval '2 minutes', $1::jsonb),"
                    " ('shop', 'shop-gone', now() - interval '2 days', $1::jsonb)",
                    old_row(4),
                )
                billing = {"DASHBOARD_POOL_SIZE": "3", "DASHBOARD_MAX_OVERFLOW": "0"}
                with serve(db_url, "billing", "billing-1", logs["billing-1"], **billing) as (
                    p3,
                    base3,
                ):

                    async def all_four() -> dict[str, Any] | None:
                        body = await pool_of(http, base3, p3, logs["billing-1"])
                        if body is None or len(body["instances"]) < 4:
                            return None
                        return body

                    three = await wait_until_async(
                        all_four, timeout_s=60, what="billing-1 listing every live instance"
                    )
                    insts = by_name(three)
                    assert set(insts) == {
                        ("billing", "billing-1"),
                        ("shop", "shop-1"),
                        ("shop", "shop-2"),
                        ("shop", "shop-old"),
                    }
                    # grouped by service: this process's service first, then the others
                    assert [i["service"] for i in three["instances"]] == [
                        "billing",
                        "shop",
                        "shop",
                        "shop",
                    ]
                    assert insts[("shop", "shop-old")]["stale"] is True
                    assert (
                        insts[("shop", "shop-old")]["pools"][0]["connections"][0]["backend_pid"]
                        == 4242
                    )
                    assert not any(
                        i["stale"] for k, i in insts.items() if k != ("shop", "shop-old")
                    )
                    # the day-old row was deleted by the new process's first report; the
                    # two-minute-old one is kept but not listed
                    left = {
                        r["instance"]
                        for r in await conn.fetch("SELECT instance FROM dashboard.fleet_pools")
                    }
                    assert "shop-gone" not in left and "shop-left" in left

                    # shop-1 sees the other service too, and the capacity check counts all
                    async def shop1_sees_four() -> dict[str, Any] | None:
                        body = await pool_of(http, base1, p1, logs["shop-1"])
                        return body if body is not None and len(body["instances"]) == 4 else None

                    body = await wait_until_async(shop1_sees_four, timeout_s=30)
                    assert [i["service"] for i in body["instances"]][0] == "shop"
                    b = budget(body)
                    assert b["source"] == "fleet", b
                    d = dashboard_reserve(b)
                    total = (2 + 1) + (2 + 1) + 4 + 3 + 4 * d
                    assert f"= {total}" in b["text"], b["text"]
                    assert "4 live instances of 2 services" in b["text"]
                    assert "DASHBOARD_REPLICAS is not used" in b["text"]

                    page = await http.get(f"{base1}/pool")
                    assert page.status_code == 200
                    rows = page_instances(page.text)
                    assert set(rows) == {"shop-1", "shop-2", "shop-old", "billing-1"}
                    assert rows["shop-1"].get("this-process") == "true"
                    assert rows["shop-old"]["stale"] == "true"
                    assert rows["billing-1"]["service"] == "billing"
                    assert "this process" in page.text and ">stale<" in page.text
                    assert 'data-service="billing"' in page.text
                    assert 'id="pool-main"' in page.text  # this process's own pool card
            finally:
                await conn.close()


# --- the "done when" case: two FastAPI replicas, one Pool page ------------------------------


def replica(db_url: str, name: str) -> tuple[FastAPI, AsyncEngine, asyncio.Event]:
    """A FastAPI app owning its engine, with the dashboard mounted (the README example)."""
    engine = create_async_engine(
        db_url,
        pool_size=1,
        max_overflow=0,
        connect_args={"server_settings": {"application_name": "shop-api"}},
    )
    ops = create_app(
        Settings(
            auth_mode="none",
            service_name="shop-api",
            instance_name=name,
            sample_interval_s=0.3,
        ),
        engines={"main": engine},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ops.lifespan():
            yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.mount("/ops", ops)  # type: ignore[arg-type]
    release = asyncio.Event()

    @app.get("/orders/{order_id}")
    async def slow_order(order_id: int) -> dict[str, int]:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await release.wait()
        return {"order_id": order_id}

    return app, engine, release


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")


async def test_two_fastapi_replicas_appear_on_one_pool_page(db_url: str) -> None:
    app1, _, release1 = replica(db_url, "replica-1")
    app2, _, release2 = replica(db_url, "replica-2")
    async with (
        app1.router.lifespan_context(app1),
        app2.router.lifespan_context(app2),
        client_for(app1) as c1,
        client_for(app2) as c2,
    ):
        # replica-1: one request holds its only connection, a second one waits for it
        orders = [asyncio.create_task(c1.get(f"/orders/{i}")) for i in (1, 2)]

        async def replica1_busy_seen_from_2() -> dict[str, Any] | None:
            body = (await c2.get("/ops/api/pool")).json()
            other = by_name(body).get(("shop-api", "replica-1"))
            if other is None:
                return None
            pool = other["pools"][0]
            ok = pool["checked_out"] == 1 and pool["waiting"] == 1 and pool["connections"]
            return body if ok else None

        body = await wait_until_async(
            replica1_busy_seen_from_2,
            timeout_s=30,
            what="replica-2 seeing replica-1's held connection and its waiter",
        )
        insts = by_name(body)
        assert set(insts) == {("shop-api", "replica-1"), ("shop-api", "replica-2")}
        (row,) = insts[("shop-api", "replica-1")]["pools"][0]["connections"]
        assert isinstance(row["backend_pid"], int) and row["held_for_s"] >= 0
        assert row["origin"].startswith("tests/test_fleet_pg.py:")
        assert row["request"] == "GET /orders/1" or row["request"] == "GET /orders/2"
        assert insts[("shop-api", "replica-2")]["this_process"] is True
        assert insts[("shop-api", "replica-2")]["pools"][0]["checked_out"] == 0
        b = budget(body)
        assert b["source"] == "fleet" and "2 live instances of 1 service" in b["text"]
        assert f"shop-api 2 × (main 1+0 + {dashboard_reserve(b)} for the dashboard)" in b["text"]

        for client, me in ((c2, "replica-2"), (c1, "replica-1")):

            async def page_lists_both(client: httpx.AsyncClient = client) -> str | None:
                """the Pool page listing both replicas (each reads with its own cycles)"""
                page = await client.get("/ops/pool")
                assert page.status_code == 200
                return page.text if len(page_instances(page.text)) == 2 else None

            html = await wait_until_async(page_lists_both, timeout_s=30, what=f"{me}'s page")
            rows = page_instances(html)
            assert set(rows) == {"replica-1", "replica-2"}, me
            assert rows[me].get("this-process") == "true"
            assert all(r["service"] == "shop-api" for r in rows.values())
            assert 'data-service="shop-api" data-instances="2"' in html
            assert "this process" in html
        release1.set()
        release2.set()
        done = await asyncio.gather(*orders)
        assert sorted(r.json()["order_id"] for r in done) == [1, 2]


# --- the state database down ----------------------------------------------------------------


async def publish_until(client: Any, pred: Any, what: str) -> dict[str, Any]:
    """Run sampler cycles (each one publishes) until `/api/pool` satisfies `pred`."""

    async def attempt() -> dict[str, Any] | None:
        await refresh(client)
        body: dict[str, Any] = (await client.get("/api/pool")).json()
        return body if pred(body) else None

    return await wait_until_async(attempt, timeout_s=30, interval_s=0.1, what=what)


async def test_state_database_down_leaves_this_process_pool(db_url: str) -> None:
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    app = app_for(
        db_url,
        DASHBOARD_STATE_DATABASE_URL=nowhere,
        DASHBOARD_REPLICAS="3",
        DASHBOARD_SERVICE_NAME="shop",
        DASHBOARD_INSTANCE_NAME="lonely",
    )
    async with AsyncTestClient(app) as client:
        body = await publish_until(
            client,
            lambda b: b["fleet"]["reason"] and "unavailable" in b["fleet"]["reason"],
            "the fleet view reporting the state database unavailable",
        )
        assert body["fleet"]["available"] is False
        (me,) = body["instances"]
        assert (me["service"], me["instance"], me["this_process"]) == ("shop", "lonely", True)
        assert me["pools"][0]["name"] == "main"
        b = budget(body)
        assert b["source"] == "replicas"
        assert "× 3 replicas" in b["text"]
        assert (
            "Counted from DASHBOARD_REPLICAS=3 because the fleet view is unavailable" in b["text"]
        )
        page = await client.get("/pool")
        assert page.status_code == 200
        assert "The fleet view is unavailable" in page.text
        assert 'id="pool-main"' in page.text and 'id="pool-capacity"' in page.text
        assert set(page_instances(page.text)) == {"lonely"}
        # live pages still work
        assert (await client.get("/api/locks")).status_code == 200


async def test_state_outage_and_recovery(pg_server_url: str, db_name: str, db_url: str) -> None:
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    try:
        app = app_for(
            db_url,
            DASHBOARD_STATE_DATABASE_URL=proxy.url(db_name),
            DASHBOARD_SERVICE_NAME="shop",
            DASHBOARD_INSTANCE_NAME="shop-1",
        )
        async with AsyncTestClient(app) as client:
            up = await publish_until(
                client, lambda b: b["fleet"]["available"], "the first report to the state"
            )
            assert [i["instance"] for i in up["instances"]] == ["shop-1"]
            assert budget(up)["source"] == "fleet"
            proxy.stop()
            down = await publish_until(
                client, lambda b: not b["fleet"]["available"], "the fleet view going unavailable"
            )
            assert budget(down)["source"] == "replicas"
            page = await client.get("/pool")
            assert "The fleet view is unavailable" in page.text and 'id="pool-main"' in page.text
            proxy.start()
            back = await publish_until(
                client, lambda b: b["fleet"]["available"], "the fleet view coming back"
            )
            assert budget(back)["source"] == "fleet"
            assert app.state.dashboard.fleet.failures >= 1
    finally:
        proxy.close()


async def test_fleet_works_as_the_runtime_role_of_a_two_role_install(
    db_url: str, plain_db_url: str, db_name: str
) -> None:
    """The owner role creates the schema; the runtime role's declared privileges are
    enough to upsert, read and prune `fleet_pools`."""
    suffix = os.urandom(4).hex()
    owner, runtime = f"fleet_owner_{suffix}", f"fleet_rt_{suffix}"
    async with fresh_roles(plain_db_url, db_name, owner, runtime):
        su = await asyncpg.connect(plain_db_url)
        try:  # what the README's "Two roles" tells an admin to run
            await su.execute(f'CREATE SCHEMA dashboard AUTHORIZATION "{owner}"')
        finally:
            await su.close()
        app = app_for(
            as_role(db_url, runtime),
            DASHBOARD_STATE_OWNER_URL=as_role(db_url, owner),
            DASHBOARD_SERVICE_NAME="shop",
            DASHBOARD_INSTANCE_NAME="rt-1",
        )
        async with AsyncTestClient(app) as client:
            body = await publish_until(
                client, lambda b: b["fleet"]["available"], "a report as the runtime role"
            )
            assert [i["instance"] for i in body["instances"]] == ["rt-1"]
            fleet = app.state.dashboard.fleet
            assert fleet.published >= 1 and fleet.last_error is None
        conn = await asyncpg.connect(plain_db_url)
        try:
            row = await conn.fetchrow(
                "SELECT service, pools FROM dashboard.fleet_pools WHERE instance = 'rt-1'"
            )
        finally:
            await conn.close()
        assert row is not None and row["service"] == "shop"
        assert json.loads(row["pools"])[0]["name"] == "main"
