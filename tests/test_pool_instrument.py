"""The instrumentation itself against real PostgreSQL: plain (threaded) Engine, NullPool,
StaticPool, Engine.dispose(), its own faults never reaching the host, detaching."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

import dashboard.pool.instrument as instrument_module
from dashboard.pool.instrument import INFO_PID, instrument, instrument_of


def here() -> int:
    return sys._getframe(1).f_lineno


def psycopg_url(plain_db_url: str) -> str:
    return (
        make_url(plain_db_url)
        .set(drivername="postgresql+psycopg")
        .render_as_string(hide_password=False)
    )


def server_pid(conn: AsyncConnection) -> int:
    """The server pid asyncpg reports for this connection (independent of the ledger)."""
    sync = conn.sync_connection
    assert sync is not None, "connection not started"
    driver = sync.connection.driver_connection
    assert driver is not None, "connection closed"
    return int(driver.get_server_pid())


def wait_until(pred: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_plain_engine_from_threads(plain_db_url: str) -> None:
    engine = create_engine(
        psycopg_url(plain_db_url),
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.5,
        connect_args={"application_name": "sync-app"},
    )
    inst = instrument(engine, "sync")
    try:
        held, line = engine.connect(), here()
        server_pid = held.execute(text("SELECT pg_backend_pid()")).scalar_one()
        (entry,) = inst.entries()
        assert entry.backend_pid == server_pid
        assert entry.thread == threading.current_thread().name
        o = entry.origin()
        assert o is not None and o.lineno == line and o.filename == __file__
        assert entry.in_transaction() is True  # SQLAlchemy 2 autobegins
        assert inst.application_names == {"sync-app"}

        outcome: list[str] = []

        def waiter() -> None:
            try:
                with engine.connect():
                    outcome.append("served")
            except sa_exc.TimeoutError:
                outcome.append("timed out")

        t = threading.Thread(target=waiter, name="waiter-thread")
        t.start()
        wait_until(lambda: inst.waiting() == 1)
        s = inst.stats()
        assert (s.checked_out, s.waiting, s.size, s.max_overflow) == (1, 1, 1, 0)
        t.join()
        assert outcome == ["timed out"]
        s = inst.stats()
        assert s.timeouts_total == 1 and s.waiting == 0 and s.peak_waiting == 1
        held.close()
        s = inst.stats()
        assert s.checked_out == 0 and s.checked_in == 1 and inst.entries() == []
    finally:
        inst.detach()
        engine.dispose()


async def test_nullpool_and_staticpool_report_what_applies(db_url: str) -> None:
    null = create_async_engine(db_url, poolclass=NullPool)
    static = create_async_engine(db_url, poolclass=StaticPool)
    try:
        ni, si = instrument(null, "null"), instrument(static, "static")
        async with null.connect() as a, null.connect() as b:
            await a.execute(text("SELECT 1"))
            await b.execute(text("SELECT 1"))
            s = ni.stats()
            assert s.pool_class == "NullPool"
            assert (s.size, s.max_overflow, s.limit) == (None, None, None)
            assert s.checked_out == 2 and s.waiting == 0
            assert {e.backend_pid for e in ni.entries()} == {server_pid(a), server_pid(b)}
        s = ni.stats()
        assert s.checked_out == 0 and s.connects_total == 2 and s.closes_total == 2
        async with static.connect() as c:
            await c.execute(text("SELECT 1"))
            s = si.stats()
            assert (s.pool_class, s.size, s.checked_out) == ("StaticPool", 1, 1)
        assert si.stats().checked_out == 0
    finally:
        await null.dispose()
        await static.dispose()


async def test_dispose_keeps_the_instrumentation(db_url: str) -> None:
    engine = create_async_engine(db_url, pool_size=2, max_overflow=0)
    inst = instrument(engine, "main")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        (closed_pid,) = inst.physical_pids()
        old_pool = engine.sync_engine.pool
        await engine.dispose()
        assert engine.sync_engine.pool is not old_pool
        # closed, but still "ours" for a moment (the server sample may lag behind)
        assert inst.physical_pids() == set() and closed_pid in inst.own_pids()
        assert "connect" not in vars(old_pool)  # the abandoned pool is left as it was
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            assert len(inst.entries()) == 1
            assert inst.stats().checked_out == 1
        assert inst.entries() == [] and inst.checkouts_total == 2
        assert engine.sync_engine.pool.connect == inst._connect_async
    finally:
        inst.detach()
        await engine.dispose()


async def test_own_faults_never_reach_the_host(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_async_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    inst = instrument(engine, "main")
    try:
        # a failing ledger entry (stack walk): the checkout still works, the error is counted
        def broken(*a: Any, **k: Any) -> Any:
            raise RuntimeError("boom")

        monkeypatch.setattr(instrument_module, "_entry", broken)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
        assert inst.errors_total == 1
        monkeypatch.undo()

        # a failing timeout hook: the host still sees SQLAlchemy's own TimeoutError
        def bad_hook(_inst: Any, _exc: BaseException) -> None:
            raise ValueError("hook bug")

        inst.on_timeout.append(bad_hook)
        async with engine.connect():
            with pytest.raises(sa_exc.TimeoutError):
                async with engine.connect():
                    pass
        assert inst.timeouts_total == 1 and inst.errors_total == 2
        # and a connection failure passes through untouched
        bad = create_async_engine(
            make_url(db_url).set(database="no_such_database_here"), pool_size=1
        )
        bad_inst = instrument(bad, "bad")
        with pytest.raises(sa_exc.DBAPIError):
            async with bad.connect():
                pass
        assert bad_inst.checkout_errors_total == 1 and bad_inst.waiting() == 0
        await bad.dispose()
    finally:
        inst.detach()
        await engine.dispose()


async def test_detach_restores_the_pool_and_instrument_is_shared(db_url: str) -> None:
    engine = create_async_engine(db_url, pool_size=1)
    try:
        inst = instrument(engine, "main")
        assert instrument(engine, "again") is inst  # one instrument per engine
        assert instrument_of(engine) is inst
        pool = engine.sync_engine.pool
        assert "connect" in vars(pool) and "_return_conn" in vars(pool)
        inst.detach()
        assert "connect" not in vars(pool) and "_return_conn" not in vars(pool)
        assert "dispose" not in vars(engine.sync_engine)
        assert instrument_of(engine) is None
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert inst.checkouts_total == 0
    finally:
        await engine.dispose()


async def test_pid_is_read_at_connect_time(db_url: str) -> None:
    engine = create_async_engine(
        db_url, pool_size=1, connect_args={"server_settings": {"application_name": "pid-test"}}
    )
    inst = instrument(engine, "main")
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            rec = next(iter(inst.ledger))
            assert rec.info[INFO_PID] == pid
            assert inst.physical_pids() == {pid}
        assert inst.application_names == {"pid-test"}
    finally:
        inst.detach()
        await engine.dispose()


async def test_waiting_counts_only_callers_queued_for_a_slot(db_url: str) -> None:
    engine = create_async_engine(db_url, pool_size=1, max_overflow=1, pool_timeout=5)
    inst = instrument(engine, "main")
    try:
        a = await engine.connect()
        b = await engine.connect()  # overflow: opened, not queued
        assert inst.waiting() == 0 and inst.stats().overflow == 1

        async def one() -> None:
            async with engine.connect() as c:
                await c.execute(text("SELECT 1"))

        tasks = [asyncio.create_task(one()) for _ in range(5)]
        for _ in range(200):
            if inst.waiting() == 5:
                break
            await asyncio.sleep(0.01)
        assert inst.waiting() == 5
        assert inst.longest_wait() > 0
        await a.close()
        await b.close()
        await asyncio.gather(*tasks)
        assert inst.waiting() == 0 and inst.peak_waiting == 5 and inst.peak_checked_out == 2
    finally:
        inst.detach()
        await engine.dispose()


async def test_idle_pool_checkout_reads_origin_live_and_busy_pool_captures(db_url: str) -> None:
    """In pressure mode a stack is captured whenever the pool is under pressure; the first
    checkout of an idle, warm pool skips it and its origin is read from the holding task."""
    engine = create_async_engine(db_url, pool_size=2, max_overflow=0)
    inst = instrument(engine, "adaptive")
    inst.always_capture = False
    try:
        async with engine.connect() as warm:  # open the physical connection first
            await warm.execute(text("SELECT 1"))
        first = await engine.connect()
        await asyncio.sleep(0)
        held_line = here()
        (entry,) = inst.entries()
        assert entry.origin_is_live
        o = entry.origin()
        assert o is not None and o.filename == __file__
        assert o.function.endswith(
            "test_idle_pool_checkout_reads_origin_live_and_busy_pool_captures"
        )
        # a second checkout while the first is out: the pool is busy, the stack is taken
        second, line = await engine.connect(), here()
        rows = {e.seq: e for e in inst.entries()}
        latest = rows[max(rows)]
        assert not latest.origin_is_live
        o2 = latest.origin()
        assert o2 is not None and o2.lineno == line
        assert held_line > 0
        await second.close()
        await first.close()
    finally:
        await engine.dispose()
