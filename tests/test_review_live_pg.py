"""The live context of a migration review on a real PostgreSQL: sessions holding locks in
their own connections, the real sampler watching the relations, conflicts read from its
snapshot (one RELATION_LOCKS per cycle, whatever the number of viewers; none when nothing
is watched), and the relations' sizes from the catalog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dashboard.db import create_diagnostics_engine
from dashboard.pool.instrument import instrument
from dashboard.review.conflicts import Conflict
from dashboard.review.live import live_conflicts, origins_by_pid, relation_sizes, resolved_names
from dashboard.review.locks import analyze
from dashboard.review.model import ACCESS_EXCLUSIVE, ACCESS_SHARE, ROW_EXCLUSIVE
from dashboard.server.sampler import Sampler
from dashboard.server.snapshot import Snapshot
from tests.lock_chain import Pile
from tests.waiting import wait_until_async

CREATE_INDEX = "CREATE INDEX accounts_n ON accounts (n)"  # ShareLock
CREATE_INDEX_CONCURRENTLY = "CREATE INDEX CONCURRENTLY accounts_n ON accounts (n)"  # SUE
ADD_COLUMN = "ALTER TABLE accounts ADD COLUMN note text"  # AccessExclusiveLock


@pytest.fixture
async def sampler(db_url: str) -> AsyncIterator[Sampler]:
    engine = create_diagnostics_engine(db_url)
    s = Sampler(engine, interval_s=0.1)
    try:
        yield s
    finally:
        await s.stop()
        await engine.dispose()


async def setup_accounts(pile: Pile, rows: int = 100) -> None:
    await pile.sql("CREATE TABLE accounts (id int PRIMARY KEY, n int)")
    await pile.sql(f"INSERT INTO accounts SELECT g, g FROM generate_series(1, {rows}) g")


def conflicts_of(sql: str, snap: Snapshot, origins: Any = None, **kw: Any) -> list[Conflict]:
    (facts,) = analyze(sql)
    return live_conflicts(facts.locks, snap, origins or {}, **kw)


async def snapshot_with(sampler: Sampler, wanted: dict[int, bool]) -> Snapshot:
    """The first snapshot whose relation locks on accounts include every pid -> granted,
    and whose session list (read a moment earlier in the same cycle) already shows each
    waiter as active: a cycle that read the sessions just before a waiter started would
    still call it idle."""

    async def check() -> Snapshot | None:
        snap = sampler.latest
        if snap is None or snap.relation_locks is None:
            return None
        seen = {(r.pid, r.granted) for r in snap.relation_locks if r.name == "accounts"}
        waiters_active = all(
            (s := snap.sessions.get(pid)) is not None and s.state == "active"
            for pid, granted in wanted.items()
            if not granted
        )
        ok = waiters_active and all((pid, g) in seen for pid, g in wanted.items())
        return snap if ok else None

    return await wait_until_async(check, what=f"relation locks of {wanted} in the snapshot")


async def test_conflicts_with_a_reader_and_an_observed_writer(
    db_url: str, plain_db_url: str, sampler: Sampler
) -> None:
    app_engine = create_async_engine(db_url, pool_size=2, max_overflow=0)
    inst = instrument(app_engine, "main")
    writer: AsyncConnection | None = None
    try:
        async with Pile(plain_db_url) as pile:
            await setup_accounts(pile)
            reader = await pile.session("t-reader")
            await reader.execute("BEGIN; SELECT count(*) FROM accounts")  # AccessShareLock
            # The writer is a connection of an observed pool: its origin is this file.
            writer = await app_engine.connect()
            writer_pid = int((await writer.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await writer.execute(text("UPDATE accounts SET n = n + 1 WHERE id = 1"))
            reader_pid = reader.get_server_pid()

            sampler.watch_relations(["accounts"])
            await sampler.start()
            snap = await snapshot_with(sampler, {reader_pid: True, writer_pid: True})
            assert snap.covers_relations(["accounts", "public.accounts"])
            modes = {(r.pid, r.mode) for r in snap.relation_locks or () if r.name == "accounts"}
            assert (reader_pid, ACCESS_SHARE) in modes and (writer_pid, ROW_EXCLUSIVE) in modes
            origins = origins_by_pid({"main": inst})

            # CREATE INDEX (ShareLock) waits for the writer only.
            found = conflicts_of(CREATE_INDEX, snap, origins)
            assert [c.pid for c in found] == [writer_pid]
            w = found[0]
            assert w.mode == ROW_EXCLUSIVE and w.granted and w.wants == "ShareLock"
            assert w.state == "idle in transaction"
            assert w.xact_age_s is not None and w.xact_age_s >= 0
            assert w.query == "UPDATE accounts SET n = n + 1 WHERE id = 1"
            assert w.backend_start is not None
            assert w.origin is not None and "test_review_live_pg.py:" in w.origin
            body = w.to_json()
            assert body["origin"] == w.origin and body["pid"] == writer_pid

            # ALTER TABLE ... ADD COLUMN (AccessExclusiveLock) waits for both; the reader's
            # transaction is the older one.
            found = conflicts_of(ADD_COLUMN, snap, origins)
            assert [c.pid for c in found] == [reader_pid, writer_pid]
            r = found[0]
            assert r.mode == ACCESS_SHARE and r.state == "idle in transaction"
            assert r.query == "BEGIN; SELECT count(*) FROM accounts"
            assert r.origin is None  # not a connection of an observed pool
            assert r.xact_age_s is not None and r.xact_age_s >= (w.xact_age_s or 0)

            # CREATE INDEX CONCURRENTLY (ShareUpdateExclusiveLock) waits for neither.
            assert conflicts_of(CREATE_INDEX_CONCURRENTLY, snap, origins) == []

            # The runner itself is never listed.
            found = conflicts_of(ADD_COLUMN, snap, origins, exclude_pids={writer_pid})
            assert [c.pid for c in found] == [reader_pid]

            # A waiter: DDL queued behind both. CREATE INDEX CONCURRENTLY now conflicts
            # with it (listed after the holders, since it does not hold the lock).
            ddl = await pile.session("t-ddl")
            await pile.block(ddl, ADD_COLUMN)
            ddl_pid = ddl.get_server_pid()
            snap = await snapshot_with(sampler, {ddl_pid: False})
            found = conflicts_of(CREATE_INDEX_CONCURRENTLY, snap, origins)
            assert [(c.pid, c.granted) for c in found] == [(ddl_pid, False)]
            assert found[0].mode == ACCESS_EXCLUSIVE and found[0].state == "active"
            assert found[0].wait_age_s is not None and found[0].wait_age_s >= 0
            assert "queue behind" in found[0].blocks
            found = conflicts_of(CREATE_INDEX, snap, origins)
            assert [(c.pid, c.granted) for c in found] == [(writer_pid, True), (ddl_pid, False)]
    finally:
        if writer is not None:
            await writer.close()
        inst.detach()
        await app_engine.dispose()


class StatementLog:
    """Every statement the sampler's engine sends, in order (a SQLAlchemy listener)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statements: list[str] = []
        self.engine = engine
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._seen)

    def cycles(self) -> list[list[str]]:
        """Statements grouped per sampler cycle (each starts with the tight timeouts)."""
        out: list[list[str]] = []
        for s in self.statements:
            if "set_config('lock_timeout'" in s:
                out.append([])
            if out:
                out[-1].append(s)
        return out

    @staticmethod
    def relation_locks(cycle: list[str]) -> int:
        return sum(1 for s in cycle if "pg_table_is_visible" in s)


async def test_one_relation_lock_query_per_cycle_whatever_the_viewers(
    db_url: str, plain_db_url: str, sampler: Sampler
) -> None:
    log = StatementLog(sampler.engine)
    try:
        async with Pile(plain_db_url) as pile:
            await setup_accounts(pile)
            holder = await pile.session("t-holder")
            await holder.execute("BEGIN; UPDATE accounts SET n = 0 WHERE id = 2")
            holder_pid = holder.get_server_pid()

            # Nothing watched: the query never runs.
            await sampler.start()
            await wait_until_async(
                lambda: _ready(sampler.cycles >= 4), what="four unwatched sampler cycles"
            )
            assert sampler.relation_lock_queries == 0
            assert sum(StatementLog.relation_locks(c) for c in log.cycles()) == 0
            assert sampler.latest is not None and sampler.latest.relation_locks is None

            # Five viewers polling the same review for several cycles.
            start_cycle = sampler.cycles
            seen: list[int] = []

            async def viewer() -> None:
                while sampler.cycles < start_cycle + 8:
                    sampler.watch_relations(["public.accounts"], ttl_s=30)
                    snap = await sampler.wait_for_relations(["public.accounts"], timeout_s=5)
                    assert snap is not None
                    found = conflicts_of(CREATE_INDEX, snap)
                    seen.extend(c.pid for c in found if c.pid is not None)
                    await asyncio.sleep(0.02)  # a poll interval (not a wait for a condition)

            await asyncio.gather(*(viewer() for _ in range(5)))
            await sampler.stop()
            assert holder_pid in seen

            cycles = log.cycles()
            per_cycle = [StatementLog.relation_locks(c) for c in cycles]
            assert max(per_cycle) == 1  # never more than one per cycle
            first = per_cycle.index(1)
            assert per_cycle[first:] == [1] * len(per_cycle[first:])  # every watched cycle
            watched_cycles = len(per_cycle) - first
            assert watched_cycles >= 7
            assert sampler.relation_lock_queries == sum(per_cycle) == watched_cycles
            assert len(cycles) == sampler.cycles

            # A watch expires: the query stops with it.
            sampler.unwatch_relations()
            sampler.watch_relations(["accounts"], ttl_s=0.3)
            await sampler.start()
            await wait_until_async(
                lambda: _ready(
                    sampler.latest is not None and sampler.latest.relation_locks is None
                ),
                what="a cycle after the watch expired",
            )
            after = sampler.relation_lock_queries
            cycle_then = sampler.cycles
            await wait_until_async(
                lambda: _ready(sampler.cycles >= cycle_then + 3), what="three more cycles"
            )
            assert sampler.relation_lock_queries == after
    finally:
        log.close()


async def _ready(value: bool) -> bool:
    return value


async def test_relation_sizes(db_url: str, plain_db_url: str) -> None:
    engine = create_diagnostics_engine(db_url)
    try:
        async with Pile(plain_db_url) as pile:
            await setup_accounts(pile, rows=5000)
            await pile.sql("ANALYZE accounts")
            await pile.sql("CREATE SCHEMA audit")
            await pile.sql("CREATE TABLE audit.events (id int)")  # never analysed
            await pile.sql('CREATE TABLE "Mixed Case" (id int)')
            names = [
                "accounts",
                "public.accounts",
                "nowhere",
                "nowhere.accounts",
                "audit.events",
                "Mixed Case",
                "?",
                "",
                "accounts",
            ]
            sizes = await relation_sizes(engine, names)
            assert [s.name for s in sizes] == [
                "accounts",
                "public.accounts",
                "audit.events",
                "Mixed Case",
            ]
            acc = sizes[0]
            assert acc.rows_estimate == 5000 and acc.bytes is not None and acc.bytes > 8192
            assert acc.bytes_approx is False and acc.qualified == "public.accounts"
            assert sizes[1].bytes == acc.bytes
            events = sizes[2]
            assert events.rows_estimate is None  # never analysed: "unknown"
            assert events.to_json()["rows_estimate"] is None
            assert events.to_json()["rows_estimate_note"] == "unknown (never analysed)"
            body = acc.to_json()
            assert (body["name"], body["rows_estimate"]) == ("accounts", 5000)
            assert body["bytes"] == acc.bytes
            assert resolved_names(sizes)["audit.events"] == "audit.events"
            assert await relation_sizes(engine, ["nowhere", "?"]) == []

            # On a connection (not in a transaction), too.
            async with engine.connect() as conn:
                again = await relation_sizes(conn, ["accounts"])
                assert [s.bytes for s in again] == [acc.bytes]
    finally:
        await engine.dispose()


async def test_relation_sizes_do_not_wait_behind_a_lock(db_url: str, plain_db_url: str) -> None:
    """pg_total_relation_size needs an AccessShareLock: with the table locked, the sizes
    come from the catalog (approximate) within the tight lock_timeout."""
    engine = create_diagnostics_engine(db_url)
    try:
        async with Pile(plain_db_url) as pile:
            await setup_accounts(pile, rows=5000)
            await pile.sql("ANALYZE accounts")
            exact = await relation_sizes(engine, ["accounts"])
            locker = await pile.session("t-locker")
            await locker.execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
            t = time.monotonic()
            (approx,) = await relation_sizes(engine, ["accounts"])
            assert time.monotonic() - t < 2.0
            assert approx.bytes_approx is True and approx.rows_estimate == 5000
            assert approx.bytes is not None and 0 < approx.bytes <= 2 * (exact[0].bytes or 0)
            await locker.execute("ROLLBACK")
            (after,) = await relation_sizes(engine, ["accounts"])
            assert after.bytes_approx is False and after.bytes == exact[0].bytes
    finally:
        await engine.dispose()
