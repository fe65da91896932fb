"""Live DDL progress on real PostgreSQL: `read_ddl_sample` on a backend building an index
or rewriting a table, and a run whose `progress` shows the index build's phase and ETA.

A slow index build, cheaply and deterministically: one ~1 KB row per page
(`fillfactor=10`), and an expression index on an IMMUTABLE plpgsql function that sleeps
1 ms per row, so the "scanning table" phase advances block by block for a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from dashboard.runs.ddl_progress import DdlProgress, DdlSample, DdlTracker, pick
from dashboard.runs.ddl_queries import read_ddl_sample
from tests.migrate import alembic_to
from tests.runs_support import HEAD, add_revision, running_runner, wait_done, wait_for
from tests.waiting import wait_until_async

SCANNING = "building index: scanning table"
ROWS = 2000

# sleeps only where the session asked for it, so the table and its index set up fast
SLOW_FUNCTION = """
CREATE FUNCTION slow_key(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF current_setting('ddltest.slow', true) = 'on' THEN PERFORM pg_sleep(0.001); END IF;
  RETURN i;
END $$
"""


@pytest.fixture
async def big_table(plain_db_url: str) -> str:
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute(SLOW_FUNCTION)
        await conn.execute(
            "CREATE TABLE ddl_big (id int NOT NULL, pad text) WITH (fillfactor = 10)"
        )
        await conn.execute(
            "INSERT INTO ddl_big SELECT g, repeat('x', 1000) FROM generate_series(1, $1::int) g",
            ROWS,
        )
    finally:
        await conn.close()
    return "ddl_big"


@pytest.fixture
async def diagnostics(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(db_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


async def sample_of(engine: AsyncEngine, pid: int) -> DdlSample | None:
    async with engine.connect() as conn:
        sample = await read_ddl_sample(conn, pid)
        await conn.rollback()  # no snapshot left behind for CREATE INDEX CONCURRENTLY
    return sample


async def slow_session(plain_db_url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(plain_db_url)
    await conn.execute("SET ddltest.slow = 'on'")
    return conn


async def cancel(plain_db_url: str, pid: int, task: asyncio.Task[str]) -> None:
    """Stop the slow statement once checked (its database is dropped after the test)."""
    conn = await asyncpg.connect(plain_db_url)
    try:
        assert await conn.fetchval("SELECT pg_cancel_backend($1)", pid)
    finally:
        await conn.close()
    with pytest.raises(asyncpg.QueryCanceledError):
        await task


async def test_read_sample_while_create_index_scans_the_table(
    plain_db_url: str, big_table: str, diagnostics: AsyncEngine
) -> None:
    builder = await slow_session(plain_db_url)
    pid = builder.get_server_pid()
    try:
        assert await sample_of(diagnostics, pid) is None
        build = asyncio.create_task(
            builder.execute("CREATE INDEX ix_ddl_slow ON ddl_big (slow_key(id))")
        )
        tracker = DdlTracker()

        async def scanning_with_eta() -> tuple[DdlSample, DdlProgress] | None:
            sample = await sample_of(diagnostics, pid)
            progress = tracker.observe(sample, time.monotonic())
            if sample is None or progress is None or sample.phase != SCANNING:
                return None
            if not sample.blocks_done or progress.eta_s is None:
                return None
            return sample, progress

        sample, progress = await wait_until_async(
            scanning_with_eta, timeout_s=20, what="a scanning sample with an ETA"
        )
        assert sample.view == "create_index" and sample.command == "CREATE INDEX"
        assert sample.relation == big_table
        assert sample.index is None  # a non-concurrent build has no index oid yet
        assert sample.blocks_total is not None and sample.blocks_total >= ROWS
        assert 0 < (sample.blocks_done or 0) <= sample.blocks_total
        assert progress.unit == "blocks" and progress.total == sample.blocks_total
        assert progress.percent is not None and 0 < progress.percent <= 100
        assert progress.eta_s is not None and 0 <= progress.eta_s < 60
        await cancel(plain_db_url, pid, build)
        assert await sample_of(diagnostics, pid) is None
    finally:
        await builder.close()


async def test_read_sample_names_the_index_of_a_concurrent_build(
    plain_db_url: str, big_table: str, diagnostics: AsyncEngine
) -> None:
    builder = await slow_session(plain_db_url)
    pid = builder.get_server_pid()
    try:
        build = asyncio.create_task(
            builder.execute("CREATE INDEX CONCURRENTLY ix_ddl_cic ON ddl_big (slow_key(id))")
        )

        async def scanning() -> DdlSample | None:
            sample = await sample_of(diagnostics, pid)
            return sample if sample and sample.phase == SCANNING and sample.blocks_done else None

        sample = await wait_until_async(
            scanning, timeout_s=20, what="the concurrent build scanning"
        )
        assert sample.command == "CREATE INDEX CONCURRENTLY"
        assert (sample.relation, sample.index) == (big_table, "ix_ddl_cic")
        await cancel(plain_db_url, pid, build)
    finally:
        await builder.close()


async def test_read_sample_while_vacuum_full_rebuilds_the_index(
    plain_db_url: str, big_table: str, diagnostics: AsyncEngine
) -> None:
    setup = await asyncpg.connect(plain_db_url)
    try:
        await setup.execute("CREATE INDEX ix_ddl_slow ON ddl_big (slow_key(id))")  # fast here
    finally:
        await setup.close()
    rewriter = await slow_session(plain_db_url)
    pid = rewriter.get_server_pid()
    try:
        rewrite = asyncio.create_task(rewriter.execute("VACUUM FULL ddl_big"))

        async def rebuilding() -> DdlSample | None:
            sample = await sample_of(diagnostics, pid)
            return sample if sample and sample.phase == "rebuilding index" else None

        sample = await wait_until_async(rebuilding, timeout_s=20, what="VACUUM FULL rebuilding")
        assert (sample.view, sample.command, sample.relation) == (
            "cluster",
            "VACUUM FULL",
            big_table,
        )
        assert sample.heap_blks_total is not None and sample.heap_blks_total >= ROWS
        assert sample.heap_tuples_written == ROWS
        progress = pick(sample)
        assert (progress.unit, progress.done, progress.total) == ("indexes", 0, 1)
        await cancel(plain_db_url, pid, rewrite)
    finally:
        await rewriter.close()


# -- through the runner (needs the tracker wired into the run's heartbeat) ----------------

TABLE_REV = "dd13table001"
INDEX_REV = "dd13index002"

# The function sleeps in the real run only: the review rehearses the plan on a scratch
# `dashboard_rehearsal_*` database first, where the build must be quick.
RUN_SETUP = f'''
op.execute("""
CREATE FUNCTION dd13_slow(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF NOT starts_with(current_database(), 'dashboard_rehearsal_') THEN
    PERFORM pg_sleep(0.001);
  END IF;
  RETURN i;
END $$
""")
op.execute("CREATE TABLE dd13_big (id int NOT NULL, pad text) WITH (fillfactor = 10)")
op.execute(
    "INSERT INTO dd13_big SELECT g, repeat('x', 1000) FROM generate_series(1, {3 * ROWS // 2}) g"
)
'''
RUN_INDEX = """
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY ix_dd13_slow ON dd13_big (dd13_slow(id))")
"""


def ddl_of(run: dict[str, Any]) -> dict[str, Any]:
    progress = run.get("progress")
    ddl = progress.get("ddl") if isinstance(progress, dict) else None
    return ddl if isinstance(ddl, dict) else {}


async def test_run_progress_shows_index_build_phase_and_eta(
    db_url: str, demo_scripts: Path
) -> None:
    add_revision(demo_scripts, TABLE_REV, HEAD, RUN_SETUP, "op.execute('DROP TABLE dd13_big')")
    add_revision(demo_scripts, INDEX_REV, TABLE_REV, RUN_INDEX)
    await alembic_to(db_url, demo_scripts, TABLE_REV)
    async with running_runner(db_url, demo_scripts) as runner:
        row = await runner.request(
            actor="t",
            address=None,
            direction="upgrade",
            target="heads",
            expected_current=[TABLE_REV],
        )
        run = await wait_for(
            runner,
            row.id,
            lambda r: ddl_of(r).get("phase") == SCANNING and bool(ddl_of(r).get("done")),
        )
        ddl, progress = ddl_of(run), run["progress"]
        assert ddl["command"] == "CREATE INDEX CONCURRENTLY"
        assert (ddl["relation"], ddl["index"], ddl["unit"]) == (
            "dd13_big",
            "ix_dd13_slow",
            "blocks",
        )
        assert isinstance(ddl["total"], int) and ddl["total"] >= 3 * ROWS // 2
        assert isinstance(ddl["done"], int) and 0 < ddl["done"] <= ddl["total"]
        assert progress["phase"] == SCANNING
        # revisions applied / in the plan keep their meaning
        assert (progress["done"], progress["total"]) == (0, 1)

        run = await wait_for(
            runner,
            row.id,
            lambda r: ddl_of(r).get("phase") == SCANNING and ddl_of(r).get("eta_s") is not None,
        )
        ddl, progress = ddl_of(run), run["progress"]
        assert isinstance(ddl["eta_s"], int | float) and 0 <= ddl["eta_s"] < 60
        assert progress["eta_s"] == ddl["eta_s"] and progress["phase"] == SCANNING
        assert isinstance(ddl["percent"], int | float) and 0 < ddl["percent"] <= 100

        run = await wait_done(runner, row.id)
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"].get("ddl") is None and run["progress"].get("eta_s") is None
