"""A real pool exhaustion, observed through the dashboard while it happens.

pool_size=2, max_overflow=1: three connections held from known lines of this file (one
idle in a transaction holding a row lock, one blocked on that lock, one idle), waiters
queued behind them, one waiter timing out (freeze-frame), then everything released.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dashboard.app import create_app
from dashboard.settings import Settings

APP_NAME = "pool-exhaustion-test"
POOL_TIMEOUT_S = 3.0
# The other waiters queue once the first has waited this long (by the pool's own clock):
# only the first reaches POOL_TIMEOUT_S before the holders are released.
STAGGER_S = 1.5

T = TypeVar("T")


def here() -> int:
    """Line number of the caller (the line that checks a connection out)."""
    return sys._getframe(1).f_lineno


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(
        db_url,
        pool_size=2,
        max_overflow=1,
        pool_timeout=POOL_TIMEOUT_S,
        connect_args={"server_settings": {"application_name": APP_NAME}},
    )
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE accounts (id int PRIMARY KEY, balance int)"))
        await conn.execute(text("INSERT INTO accounts VALUES (1, 100)"))
    await eng.dispose()  # start the test with an empty pool
    yield eng
    await eng.dispose()


def app_for(db_url: str, engine: AsyncEngine) -> Any:
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "0.3",
            "DASHBOARD_LEAK_THRESHOLD_S": "1",
        }
    )
    return create_app(settings, engines={"main": engine})


async def pool_json(client: AsyncTestClient[Any]) -> dict[str, Any]:
    r = await client.get("/api/pool")
    assert r.status_code == 200, r.text
    pools: list[dict[str, Any]] = r.json()["pools"]
    return pools[0]


async def until(
    pred: Callable[[], Awaitable[T | None]], timeout_s: float = 10.0, every_s: float = 0.05
) -> T:
    """Poll `pred` until it returns something truthy (returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every_s)


async def app_backend_pids(plain_db_url: str) -> set[int]:
    conn = await asyncpg.connect(plain_db_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", APP_NAME
        )
        return {r["pid"] for r in rows}
    finally:
        await conn.close()


async def test_real_exhaustion(db_url: str, plain_db_url: str, engine: AsyncEngine) -> None:
    app = app_for(db_url, engine)
    async with AsyncTestClient(app) as client:
        base = await pool_json(client)
        assert base["size"] == 2 and base["max_overflow"] == 1 and base["checked_out"] == 0

        # --- three holders, from known lines -------------------------------------------
        locker, line_locker = await engine.connect(), here()
        await locker.execute(text("UPDATE accounts SET balance = balance - 1 WHERE id = 1"))
        blocked, line_blocked = await engine.connect(), here()
        blocked_stmt = asyncio.create_task(
            blocked.execute(text("UPDATE accounts SET balance = balance + 1 WHERE id = 1"))
        )
        idle, line_idle = await engine.connect(), here()

        # --- waiters ----------------------------------------------------------------
        async def waiter() -> str:
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                return "served"
            except sa_exc.TimeoutError:
                return "timed out"

        first = asyncio.create_task(waiter(), name="first-waiter")
        await until(lambda: _waiting(client, 1, for_s=STAGGER_S))
        others = [asyncio.create_task(waiter(), name=f"waiter-{i}") for i in range(3)]
        p = await until(lambda: _waiting(client, 4))

        assert p["checked_out"] == 3
        assert p["overflow"] == 1
        assert p["checked_in"] == 0
        assert p["waiting"] == 4
        assert p["longest_wait_s"] >= 1.0
        assert len(p["connections"]) == 3

        # origins name this file and the lines that took the connections
        origins = sorted(c["origin"] for c in p["connections"])
        expected = sorted(
            f"tests/test_pool_exhaustion.py:{n} in test_real_exhaustion"
            for n in (line_locker, line_blocked, line_idle)
        )
        assert origins == expected
        assert all(c["task"] for c in p["connections"])

        # ledger pids are exactly the backends PostgreSQL shows for this application
        ledger_pids = {c["backend_pid"] for c in p["connections"]}
        assert ledger_pids == await app_backend_pids(plain_db_url)

        # joined with the server: who blocks whom, who is idle in a transaction.
        # (The app runs in the test client's own loop: wait for its sampler, don't drive it.)
        await fresh_sample(client, blocked=True)
        p = await pool_json(client)
        by_pid = {c["backend_pid"]: c for c in p["connections"]}
        locker_pid = _pid(p, line_locker)
        blocked_pid = _pid(p, line_blocked)
        idle_pid = _pid(p, line_idle)
        assert by_pid[locker_pid]["server"]["state"] == "idle in transaction"
        assert by_pid[locker_pid]["server"]["blocks"] == 1
        assert by_pid[locker_pid]["in_transaction"] is True
        assert "blocking 1 session" in by_pid[locker_pid]["doing"]
        assert by_pid[blocked_pid]["server"]["blocked_by"] == [locker_pid]
        assert f"lock held by pid {locker_pid}" in by_pid[blocked_pid]["doing"]
        assert by_pid[idle_pid]["server"]["state"] == "idle"
        assert by_pid[idle_pid]["in_transaction"] is False
        assert p["other_backends"]["count"] == 0
        # held longer than the (1 s) leak threshold by now
        assert all(c["leak_suspect"] for c in p["connections"])

        # --- one waiter times out: counter and freeze-frame ------------------------------
        assert await first == "timed out"
        p = await pool_json(client)
        assert p["timeouts_total"] == 1
        assert p["waiting"] == 3

        async def frame_done() -> dict[str, Any] | None:
            r = await client.get("/api/pool")
            frames = r.json()["freeze_frames"]
            return frames[0] if frames and frames[0]["complete"] else None

        # The frame's server half is one sampler cycle right after the timeout.
        summary = await until(frame_done)

        # Release before the other waiters reach their own timeout.
        await locker.rollback()
        await blocked_stmt
        await blocked.rollback()
        for conn in (locker, blocked, idle):
            await conn.close()
        assert await asyncio.gather(*others) == ["served"] * 3

        assert summary["timeouts"] == 1
        assert summary["checked_out"] == 3
        assert summary["waiting"] == 4  # the one that timed out still counted
        r = await client.get(f"/api/pool/freeze-frames/{summary['id']}")
        assert r.status_code == 200
        frame = r.json()
        assert frame["stats"]["checked_out"] == 3 and frame["stats"]["overflow"] == 1
        assert "QueuePool limit of size 2 overflow 1 reached" in frame["error"]
        assert {c["backend_pid"] for c in frame["connections_detail"]} == ledger_pids
        assert all(
            c["origin"].startswith("tests/test_pool_exhaustion.py:")
            for c in frame["connections_detail"]
        )
        assert all(c["stack"] for c in frame["connections_detail"])
        assert frame["server"] is not None, frame["server_error"]
        assert frame["server"]["locks"]["blocked_count"] >= 1
        frozen = {c["backend_pid"]: c for c in frame["connections_detail"]}
        assert frozen[blocked_pid]["server"]["blocked_by"] == [locker_pid]
        assert frame["server"]["activity"]["total"] >= 3

        # the pages render it
        r = await client.get("/pool")
        assert r.status_code == 200 and f'data-frame="{summary["id"]}"' in r.text
        r = await client.get(f"/pool/freeze/{summary['id']}")
        assert r.status_code == 200 and str(locker_pid) in r.text

        # --- everything back to idle ---------------------------------------------------
        p = await pool_json(client)
        assert p["checked_out"] == 0
        assert p["waiting"] == 0
        assert p["connections"] == []
        assert p["overflow"] == 0
        assert p["checked_in"] == 2
        assert p["timeouts_total"] == 1
        assert p["peak_checked_out"] == 3
        assert p["peak_waiting"] == 4
        assert p["checkouts_total"] >= 6


async def fresh_sample(client: AsyncTestClient[Any], *, blocked: bool = False) -> None:
    mark = time.time()

    async def newer() -> bool:
        r = await client.get("/api/pool")
        meta = r.json()["server_snapshot"]
        if not meta.get("available") or meta["taken_at"] <= mark:
            return False
        if blocked:
            locks = (await client.get("/api/locks")).json()
            return bool(locks.get("blocked_count"))
        return True

    await until(newer)


async def _waiting(
    client: AsyncTestClient[Any], n: int, *, for_s: float = 0.0
) -> dict[str, Any] | None:
    """The pool body once exactly `n` callers queue, the longest for at least `for_s`."""
    p = await pool_json(client)
    return p if p["waiting"] == n and p["longest_wait_s"] >= for_s else None


def _pid(pool: dict[str, Any], line: int) -> int:
    for c in pool["connections"]:
        if c["origin_frame"]["line"] == line:
            return int(c["backend_pid"])
    raise AssertionError(f"no ledger row from line {line}")


async def test_connection_detail_shows_stack_and_holder(db_url: str, engine: AsyncEngine) -> None:
    app = app_for(db_url, engine)
    async with AsyncTestClient(app) as client:
        release = asyncio.Event()

        async def handler_like() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await release.wait()

        task = asyncio.create_task(handler_like(), name="handler-like")
        p = await until(lambda: _checked_out(client, 1))
        row = p["connections"][0]
        assert row["task"] == "handler-like"
        assert row["origin"].startswith("tests/test_pool_exhaustion.py:")
        assert row["origin"].endswith(
            "in test_connection_detail_shows_stack_and_holder.<locals>.handler_like"
        )
        r = await client.get(f"/api/pool/main/connections/{row['id']}")
        assert r.status_code == 200
        detail = r.json()
        assert detail["stack"][0]["function"].endswith("handler_like")
        # the holder is suspended in release.wait(), inside handler_like
        assert any(f["function"].endswith("handler_like") for f in detail["holder_now"])
        r = await client.get(f"/pool/main/connections/{row['id']}")
        assert r.status_code == 200 and "Stack at checkout" in r.text
        release.set()
        await task
        r = await client.get(f"/api/pool/main/connections/{row['id']}")
        assert r.status_code == 404
        assert "not checked out" in r.json()["error"]


async def _checked_out(client: AsyncTestClient[Any], n: int) -> dict[str, Any] | None:
    p = await pool_json(client)
    return p if p["checked_out"] == n else None


async def test_pool_page_htmx_fragment(db_url: str, engine: AsyncEngine) -> None:
    app = app_for(db_url, engine)
    async with AsyncTestClient(app) as client:
        conn: AsyncConnection = await engine.connect()
        try:
            full = await client.get("/pool")
            assert full.status_code == 200
            assert 'id="pool-panel"' in full.text and "data-poll" in full.text
            frag = await client.get("/pool", headers={"HX-Request": "true"})
            assert frag.status_code == 200
            assert "<html" not in frag.text
            assert 'data-pool="main"' in frag.text and 'data-checked-out="1"' in frag.text
            assert "<svg" in frag.text and "pool-chart" in frag.text
            assert 'style="' not in frag.text  # the CSP forbids inline styles
            overview = await client.get("/")
            assert 'id="pool-card"' in overview.text
        finally:
            await conn.close()
