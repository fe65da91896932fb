"""Lock retries and the pile-up watchdog against real PostgreSQL: a migration that waits
for ACCESS EXCLUSIVE behind a long reader never makes later readers wait past the
watchdog's threshold, and lands once the reader ends; a run that exhausts its attempts
fails naming the session that holds the lock, not a waiter queued ahead of it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from tests.lock_chain import Pile, app_for
from tests.migrate import alembic_to
from tests.runs_support import (
    BASE,
    CIC_REV,
    DEMO,
    ENUM_REV,
    running_runner,
    wait_done,
    wait_for,
)

NOTES = "d5e9f3a4b804"  # ALTER TABLE orders ADD COLUMN notes, shipping_address


async def version(plain: str) -> list[str]:
    conn = await asyncpg.connect(plain)
    try:
        return [r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await conn.close()


def events(run: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in run["log"] if e["event"] == name]


async def timed_read(conn: asyncpg.Connection) -> float:
    t0 = time.monotonic()
    await conn.fetchval("SELECT count(*) FROM orders")
    return time.monotonic() - t0


async def test_pileup_is_cancelled_and_the_retry_lands(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with Pile(plain_db_url) as pile:
        holder = await pile.session("t-long-reader")
        holder_pid = holder.get_server_pid()
        await holder.execute("BEGIN; SELECT count(*) FROM orders")  # ACCESS SHARE, kept
        readers = [await pile.session(f"t-reader-{i}") for i in range(6)]
        async with running_runner(
            db_url, lock_timeout_ms=30000, lock_retries=10, pileup_max_waiters=5
        ) as runner:
            row = await runner.request(
                actor="t", address=None, direction="upgrade", target=NOTES, expected_current=[BASE]
            )
            await wait_for(runner, row.id, lambda r: r["progress"].get("lock_wait") is not None)
            # Six readers arrive while the ALTER waits: they queue behind it until the
            # watchdog sees five of them and cancels the wait (long before lock_timeout).
            waits = await asyncio.gather(*(timed_read(r) for r in readers))
            cancelled = await wait_for(
                runner, row.id, lambda r: bool(events(r, "lock_retry")), within_s=10
            )
            assert max(waits) < 1.0 + 0.5, waits
            retry = events(cancelled, "lock_retry")[0]
            assert "pile-up watchdog" in retry["message"]
            assert f"pid {holder_pid}" in retry["message"]
            assert retry["revision"] == NOTES
            # The reader ends; the next attempt gets its lock.
            await holder.execute("COMMIT")
            run = await wait_done(runner, row.id)
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"]["attempts"] >= 2
    assert run["progress"]["retries"]["watchdog_cancels"] >= 1
    assert await version(plain_db_url) == [NOTES]


async def test_retries_exhausted_name_the_root_not_the_waiter_ahead(
    db_url: str, plain_db_url: str
) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with Pile(plain_db_url) as pile:
        holder = await pile.session("t-idle-holder")
        holder_pid = holder.get_server_pid()
        await holder.execute("BEGIN; SELECT count(*) FROM orders")  # idle in transaction
        # A second session queues for ACCESS EXCLUSIVE ahead of the migration: it shows in
        # pg_blocking_pids(migration) but holds nothing; the holder is the root.
        ahead = await pile.session("t-waiter-ahead")
        ahead_pid = ahead.get_server_pid()
        await pile.block(ahead, "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        async with running_runner(
            db_url, lock_timeout_ms=400, lock_retries=3, pileup_max_wait_ms=5000
        ) as runner:
            row = await runner.request(
                actor="t", address=None, direction="upgrade", target=NOTES, expected_current=[BASE]
            )
            run = await wait_done(runner, row.id, within_s=60)
    assert run["status"] == "failed"
    assert "in 3 attempt(s)" in run["error"], run["error"]
    assert f"pid {holder_pid}" in run["error"]
    assert f"pid {ahead_pid}" not in run["error"]
    assert "in between" in run["error"]
    lock = run["error_detail"]["lock"]
    assert lock["root_pids"] == [holder_pid]
    assert lock["locks_url"] == f"/locks#root-{holder_pid}"
    assert run["error_detail"]["retries"]["exhausted"] is True
    assert run["error_detail"]["retries"]["lock_timeouts"] == 3
    assert len(events(run, "lock_retry")) == 2
    assert len(events(run, "lock_retries_exhausted")) == 1
    assert await version(plain_db_url) == [BASE]


async def index_state(plain: str, name: str) -> bool | None:
    """indisvalid of index `name`, None when it does not exist."""
    conn = await asyncpg.connect(plain)
    try:
        valid: bool | None = await conn.fetchval(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)", name
        )
        return valid
    finally:
        await conn.close()


async def test_concurrent_index_retried_after_its_invalid_leftover_is_dropped(
    db_url: str, plain_db_url: str
) -> None:
    """CREATE INDEX CONCURRENTLY waits for every older snapshot in the database (the
    demo's pile-up holds some): its lock_timeout fires after the index was created, leaving
    it INVALID, and a plain retry with IF NOT EXISTS would "succeed" over it. The retrier
    drops the leftover first, so the run lands with a valid index."""
    await alembic_to(db_url, DEMO, ENUM_REV)
    async with Pile(plain_db_url) as pile:
        old = await pile.session("t-old-snapshot")
        await old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM customers")
        async with running_runner(db_url, lock_timeout_ms=500, lock_retries=6) as runner:
            row = await runner.request(
                actor="t",
                address=None,
                direction="upgrade",
                target=CIC_REV,
                expected_current=[ENUM_REV],
            )
            await wait_for(
                runner, row.id, lambda r: bool(events(r, "invalid_index_dropped")), within_s=20
            )
            await old.execute("COMMIT")
            run = await wait_done(runner, row.id)
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"]["attempts"] >= 2
    assert await index_state(plain_db_url, "ix_orders_customer_created") is True
    assert run["warnings"] == []


async def test_failed_concurrent_build_is_never_silent(db_url: str, plain_db_url: str) -> None:
    """Retries exhausted on the concurrent build: its INVALID index stays and is reported
    on the run and on /api/migrations; the next run's IF NOT EXISTS skips over it and
    "succeeds", but carries the warning and is not clean."""
    await alembic_to(db_url, DEMO, ENUM_REV)
    index = "ix_orders_customer_created"
    async with Pile(plain_db_url) as pile:
        old = await pile.session("t-old-snapshot")
        await old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM customers")
        async with running_runner(db_url, lock_timeout_ms=300, lock_retries=2) as runner:
            row = await runner.request(
                actor="t",
                address=None,
                direction="upgrade",
                target=CIC_REV,
                expected_current=[ENUM_REV],
            )
            failed = await wait_done(runner, row.id)
            await old.execute("COMMIT")
            assert failed["status"] == "failed"
            assert await index_state(plain_db_url, index) is False
            kinds = {(w["kind"], w["name"]) for w in failed["warnings"]}
            assert ("invalid_index", f"public.{index}") in kinds, failed["warnings"]
            warning = next(w for w in failed["warnings"] if w["kind"] == "invalid_index")
            assert warning["fix"] == f"DROP INDEX CONCURRENTLY public.{index};"
            assert failed["attempts"] == 2
            app = app_for(db_url)
            async with AsyncTestClient(app) as client:
                body = (await client.get("/api/migrations")).json()
                names = [w["name"] for w in body["schema_warnings"]]
                assert f"public.{index}" in names
                page = (await client.get(f"/runs/{row.id}")).text
                assert f"public.{index}" in page and "DROP INDEX CONCURRENTLY" in page
            # The retry over the invalid index: IF NOT EXISTS skips it, the version table
            # moves, and the run says it is not clean.
            again = await runner.request(
                actor="t",
                address=None,
                direction="upgrade",
                target=CIC_REV,
                expected_current=[ENUM_REV],
            )
            retried = await wait_done(runner, again.id)
    assert retried["status"] == "succeeded", retried["error"]
    assert retried["clean"] is False
    assert "not clean" in retried["log"][-1]["message"]
    assert any(w["name"] == f"public.{index}" for w in retried["warnings"])
    assert await index_state(plain_db_url, index) is False
