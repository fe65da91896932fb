"""Does the dashboard answer while the pool it observes is exhausted?

One process, one event loop, like a mounted dashboard: uvicorn serves the dashboard for
an "application" engine (pool_size 5, max_overflow 5). A client thread measures
`/api/pool` and `/api/locks` latency over HTTP, first with the pool idle, then with all
10 connections checked out and 50 tasks queued for one (pool_timeout 120 s, so they keep
waiting). A design that queried through the observed pool would wait pool_timeout; this
one must stay under 100 ms p99. For contrast, one more checkout from the observed pool is
attempted while exhausted.

Usage:
    DASHBOARD_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/bench_pool_exhaustion.py [--requests 200] [--waiters 50]

It creates a scratch database (the dashboard keeps its own tables there) and drops it.
Bounded: 2 phases × 2 endpoints × --requests requests, about 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine  # noqa: E402

from dashboard.app import create_app  # noqa: E402
from dashboard.settings import Settings  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENDPOINTS = ("/api/pool", "/api/locks")


def server_url() -> str:
    return (
        os.environ.get("DASHBOARD_BENCH_DATABASE_URL")
        or os.environ.get("DASHBOARD_TEST_DATABASE_URL")
        or DEFAULT_URL
    )


def with_database(url: str, name: str, driver: str) -> str:
    return make_url(url).set(drivername=driver, database=name).render_as_string(hide_password=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(base: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for ep in ENDPOINTS:
            client.get(ep)  # warm
            times: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = client.get(ep)
                times.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"{ep} answered {r.status_code}: {r.text[:200]}")
            out[ep] = times
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def serve_and_load(
    args: argparse.Namespace, db_async_url: str, report: dict[str, object]
) -> None:
    engine = create_async_engine(
        db_async_url,
        pool_size=5,
        max_overflow=5,
        pool_timeout=120,
        connect_args={"server_settings": {"application_name": "bench-app"}},
    )
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_async_url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_SAMPLE_INTERVAL_S": "1",
        }
    )
    app = create_app(settings, engines={"main": engine})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serve = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    held: list[AsyncConnection] = []
    waiters: list[asyncio.Task[None]] = []
    try:
        await asyncio.sleep(1.5)  # first server sample
        report["idle"] = await loop.run_in_executor(None, measure, base, args.requests)

        for _ in range(10):  # every connection of the pool, each in a transaction
            conn = await engine.connect()
            await conn.execute(text("SELECT txid_current()"))
            held.append(conn)

        async def waiter() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        waiters = [asyncio.create_task(waiter()) for _ in range(args.waiters)]
        inst = app.state.dashboard.pools.instruments["main"]
        while inst.waiting() < args.waiters:
            await asyncio.sleep(0.01)
        stats = inst.stats()
        report["exhausted_state"] = (stats.checked_out, stats.waiting)
        await asyncio.sleep(1.2)  # a server sample taken while exhausted
        report["exhausted"] = await loop.run_in_executor(None, measure, base, args.requests)

        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(1.0):
                async with engine.connect():
                    pass
            report["contrast"] = "served (unexpected)"
        except TimeoutError:
            report["contrast"] = f"still waiting after {time.perf_counter() - t0:.2f} s (gave up)"
    finally:
        for conn in held:
            await conn.close()
        await asyncio.gather(*waiters, return_exceptions=True)
        server.should_exit = True
        await serve
        await engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--waiters", type=int, default=50)
    args = ap.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    url = server_url()
    name = "bench_pool_" + uuid.uuid4().hex[:10]
    admin_dsn = with_database(url, "postgres", "postgresql")

    async def create() -> None:
        c = await asyncpg.connect(admin_dsn)
        await c.execute(f'CREATE DATABASE "{name}"')
        await c.close()

    async def drop() -> None:
        c = await asyncpg.connect(admin_dsn)
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()

    asyncio.run(create())
    report: dict[str, object] = {}
    try:
        result: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(
                    serve_and_load(args, with_database(url, name, "postgresql+asyncpg"), report)
                )
            except BaseException as exc:
                result.append(exc)

        t = threading.Thread(target=run, name="dashboard-and-app")
        t.start()
        t.join()
        if result:
            raise result[0]
    finally:
        asyncio.run(drop())

    idle = report["idle"]
    exhausted = report["exhausted"]
    assert isinstance(idle, dict) and isinstance(exhausted, dict)
    co, wt = report["exhausted_state"]  # type: ignore[misc]
    print(
        f"dashboard latency, pool idle vs exhausted ({co} checked out of 10, {wt} tasks waiting), "
        f"{args.requests} requests per endpoint, ms"
    )
    worst = 0.0
    for ep in ENDPOINTS:
        i, e = idle[ep], exhausted[ep]
        p99i, p99e = pct(i, 0.99), pct(e, 0.99)
        worst = max(worst, p99e)
        print(
            f"  {ep:11s} idle p50 {statistics.median(i):6.2f} p99 {p99i:6.2f} max {max(i):6.2f}   "
            f"exhausted p50 {statistics.median(e):6.2f} p99 {p99e:6.2f} max {max(e):6.2f}   "
            f"p99 ratio exhausted/idle {p99e / p99i:.2f}"
        )
    print(f"  a checkout from the observed pool meanwhile: {report['contrast']}")
    verdict = "met" if worst < 100 else "NOT met"
    print(f"  target p99 < 100 ms while exhausted: {verdict} (worst p99 {worst:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
