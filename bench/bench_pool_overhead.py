"""Overhead of the pool instrumentation on a checkout + checkin, against real PostgreSQL.

Five engines on the same database -- plain; instrumented (the default: ledger with an
origin stack on every checkout, walked by the C extension dashboard/pool/_framewalk.c);
the same with the pure-Python walk (what an install without a C compiler gets);
instrumented with stacks only under pressure
(`always_capture = False`: another connection is out or the checkout waited; an idle
pool's checkout reads its origin live from the task instead); and instrumented without
stack capture (`stack_depth=0`) -- measured in rotating rounds inside one process, so
machine noise hits all alike. Reports the median per-operation time of each and the
ratio instrumented / plain, at four levels:

- `async with engine.connect(): pass` -- a bare checkout + checkin, what the issue's
  target (ratio <= 1.10) is about;
- the same from the bottom of a fresh chain of 8 coroutines (handler -> service ->
  repository ...), as in a web request: every frame the walk keeps is new;
- `async with engine.connect() as c: await c.execute(select 1)` -- the cheapest real use;
- `pool.connect()` + `close()` on the raw pool inside one greenlet: the pool alone, where
  the fixed cost of the instrumentation is most visible.

For the target it also prints a paired estimate: the median, over rounds, of each
round's instrumented-minus-plain time (less sensitive to drift between rounds).

Usage:
    DASHBOARD_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/bench_pool_overhead.py [--rounds 21] [--ops 2000]

Bounded: about 2 s per round on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402
from sqlalchemy.util import greenlet_spawn  # noqa: E402

from dashboard.pool import instrument as instrument_mod  # noqa: E402
from dashboard.pool import origin  # noqa: E402
from dashboard.pool.instrument import instrument  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url() -> str:
    raw = (
        os.environ.get("DASHBOARD_BENCH_DATABASE_URL")
        or os.environ.get("DASHBOARD_TEST_DATABASE_URL")
        or os.environ.get("DASHBOARD_DATABASE_URL")
        or DEFAULT_URL
    )
    return make_url(raw).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def engine_level(engine: AsyncEngine, ops: int) -> float:
    """µs per `async with engine.connect(): pass`."""
    t0 = time.perf_counter()
    for _ in range(ops):
        async with engine.connect():
            pass
    return (time.perf_counter() - t0) / ops * 1e6


async def _chain(engine: AsyncEngine, depth: int) -> None:
    if depth:
        await _chain(engine, depth - 1)
        return
    async with engine.connect():
        pass


async def nested_level(engine: AsyncEngine, ops: int) -> float:
    """µs per checkout + checkin from the bottom of a fresh 8-coroutine chain."""
    t0 = time.perf_counter()
    for _ in range(ops):
        await _chain(engine, 8)
    return (time.perf_counter() - t0) / ops * 1e6


async def query_level(engine: AsyncEngine, ops: int) -> float:
    """µs per checkout + `SELECT 1` + checkin."""
    stmt = text("SELECT 1")
    t0 = time.perf_counter()
    for _ in range(ops):
        async with engine.connect() as conn:
            await conn.execute(stmt)
    return (time.perf_counter() - t0) / ops * 1e6


async def pool_level(engine: AsyncEngine, ops: int) -> float:
    """µs per raw pool checkout + checkin (no Connection object, no greenlet switch)."""
    pool = engine.sync_engine.pool

    def loop() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            pool.connect().close()
        return (time.perf_counter() - t0) / ops * 1e6

    result: float = await greenlet_spawn(loop)
    return result


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--ops", type=int, default=2000)
    args = ap.parse_args()
    url = database_url()
    engines = {
        "plain": create_async_engine(url, pool_size=1, max_overflow=0),
        "instrumented": create_async_engine(url, pool_size=1, max_overflow=0),
        "python walk": create_async_engine(url, pool_size=1, max_overflow=0),
        "stacks under pressure": create_async_engine(url, pool_size=1, max_overflow=0),
        "no stacks": create_async_engine(url, pool_size=1, max_overflow=0),
    }
    inst = instrument(engines["instrumented"], "bench")
    instrument(engines["python walk"], "bench-pywalk")
    instrument(engines["stacks under pressure"], "bench-pressure").always_capture = False
    instrument(engines["no stacks"], "bench-nostack", stack_depth=0)
    levels = {
        "engine": engine_level,
        "nested": nested_level,
        "query": query_level,
        "pool": pool_level,
    }
    ops = {
        "engine": args.ops,
        "nested": args.ops,
        "query": max(200, args.ops // 4),
        "pool": args.ops,
    }
    results: dict[str, dict[str, list[float]]] = {
        level: {name: [] for name in engines} for level in levels
    }
    default_entry = instrument_mod._entry
    try:
        for eng in engines.values():  # connect and warm up
            for fn in levels.values():
                await fn(eng, 200)
        for r in range(args.rounds):
            order = list(engines.items())
            order = order[r % len(order) :] + order[: r % len(order)]  # rotate who goes first
            for level, fn in levels.items():
                for name, eng in order:
                    # the walker is chosen per process; swap it for this variant only
                    if name == "python walk":
                        instrument_mod._entry = origin._checkout_entry_py
                    try:
                        results[level][name].append(await fn(eng, ops[level]))
                    finally:
                        instrument_mod._entry = default_entry
    finally:
        for eng in engines.values():
            await eng.dispose()

    print(f"pool instrumentation overhead: {args.rounds} rotating rounds, median µs per operation")
    print(f"database: {make_url(url).render_as_string(hide_password=True)}")
    print(f"stack walker in use by default: {origin.WALKER}")
    verdict_ratio = 0.0
    variants = ("instrumented", "python walk", "stacks under pressure", "no stacks")
    print(f"  {'level':36s} {'plain':>8s}" + "".join(f" {v:>26s}" for v in variants))
    for level, label in (
        ("engine", "checkout+checkin (engine.connect)"),
        ("nested", "the same, 8 fresh coroutines deep"),
        ("query", "checkout+SELECT 1+checkin"),
        ("pool", "raw pool.connect()+close()"),
    ):
        p = statistics.median(results[level]["plain"])
        row = f"  {label:36s} {p:8.2f}"
        for name in variants:
            v = statistics.median(results[level][name])
            row += f" {f'{v:.2f} (+{v - p:.2f}, x{v / p:.3f})':>26s}"
            if level == "engine" and name == "instrumented":
                verdict_ratio = v / p
        print(row)
    print(
        f"  checkouts recorded by the default instrument: {inst.checkouts_total}, "
        f"ledger now {len(inst.ledger)}, instrumentation errors {inst.errors_total}"
    )
    plain_engine = results["engine"]["plain"]
    paired = statistics.median(
        v - p for v, p in zip(results["engine"]["instrumented"], plain_engine, strict=True)
    )
    print(
        f"  paired estimate (median of per-round differences): +{paired:.2f} µs, "
        f"x{1 + paired / statistics.median(plain_engine):.3f}"
    )
    target = 1.10
    verdict = "met" if verdict_ratio <= target else "NOT met"
    print(
        f"  target instrumented/plain <= {target:.2f} on the bare checkout+checkin: {verdict} "
        f"(x{verdict_ratio:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
