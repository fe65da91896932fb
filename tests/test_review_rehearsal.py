"""Rehearsals on a scratch database of the real PostgreSQL server: the exact statements per
revision, the locks PostgreSQL granted for each, data dependence, mid-history plans, the
fallbacks to the offline render, and no scratch database left behind."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from dashboard.migrations.plan import make_plan
from dashboard.review import queries
from dashboard.review.locks import analyze
from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    SHARE,
    Capture,
    CapturedStatement,
    RelationLock,
)
from dashboard.review.rehearsal import drop_leftovers, rehearse
from dashboard.review.statements import lock_disagreements, offline_capture
from dashboard.targets import Target
from tests.runs_support import add_revision
from tests.test_review_statements import BACKFILL, INDEXES, SEED, make_project
from tests.waiting import wait_until_async

SCRATCH = r"SELECT datname FROM pg_database WHERE datname LIKE 'dashboard\_rehearsal\_%'"


async def scratch_databases(plain_db_url: str) -> set[str]:
    conn = await asyncpg.connect(plain_db_url)
    try:
        return {r[0] for r in await conn.fetch(SCRATCH)}
    finally:
        await conn.close()


@pytest.fixture
async def no_leftovers(
    plain_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[str]]:
    """Every scratch database this test's rehearsals made is gone when the test ends
    (names recorded as they are made: other rehearsals may run on the server meanwhile)."""
    made: list[str] = []
    original = queries.scratch_name

    def recorded(now: float | None = None) -> str:
        made.append(original(now))
        return made[-1]

    monkeypatch.setattr(queries, "scratch_name", recorded)
    yield made
    assert not set(made) & await scratch_databases(plain_db_url)


def find(cap: Capture, revision: str, starts: str) -> CapturedStatement:
    (rev,) = [r for r in cap.revisions if r.revision == revision]
    found = [s for s in rev.statements if s.sql.strip().upper().startswith(starts.upper())]
    assert found, [s.sql for s in rev.statements]
    return found[0]


async def test_rehearsal_records_statements_and_locks(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    target = Target("main", scripts)
    plan = make_plan(sd, (), "upgrade", "heads")
    cap = await rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=target)
    assert cap.exact is True and cap.source == "rehearsal", cap.note
    assert cap.rehearsal_error is None and cap.elapsed_ms > 0
    assert len(no_leftovers) == 1  # one scratch database (dropped: see the fixture)
    assert [r.revision for r in cap.revisions] == [SEED, INDEXES, BACKFILL]
    assert [s.index for s in cap.statements] == list(range(len(cap.statements)))
    assert not any("alembic_version" in s.sql for s in cap.statements)
    seed, indexes, backfill = cap.revisions
    assert seed.source_file and seed.source_file.endswith(f"{SEED}_test.py")

    # the bulk insert is one executemany statement; the runner sends `$n` parameters
    assert [analyze(s.sql)[0].kind for s in seed.statements] == [
        "CreateStmt",
        "InsertStmt",
        "UpdateStmt",
    ]
    assert "$1" in seed.statements[1].sql

    add_column = find(cap, INDEXES, "ALTER TABLE customers ADD COLUMN extra")
    assert add_column.in_transaction is True
    assert RelationLock("public.customers", ACCESS_EXCLUSIVE) in (add_column.observed_locks or ())
    index = find(cap, INDEXES, "CREATE INDEX ix_customers_name")
    assert index.observed_locks == (RelationLock("public.customers", SHARE),)
    concurrently = find(cap, INDEXES, "CREATE INDEX CONCURRENTLY")
    assert concurrently.in_transaction is False and concurrently.observed_locks is None
    assert indexes.data_dependent is False

    # the backfill read rows and decided from them (two seeded rows: two UPDATEs)
    assert backfill.data_dependent is True
    assert backfill.data_reason and "SELECT id FROM customers" in backfill.data_reason
    select = find(cap, BACKFILL, "SELECT")
    assert select.reads_rows is True
    assert [s.reads_rows for s in backfill.statements].count(True) == 1
    updates = [s for s in backfill.statements if s.sql.startswith("UPDATE")]
    assert len(updates) == 2 and updates[0].fingerprint == updates[1].fingerprint

    # the static analysis agrees with what PostgreSQL took, statement by statement
    for s in cap.statements:
        if s.observed_locks is not None:
            (static,) = analyze(s.sql)
            assert lock_disagreements(static, s.observed_locks) == [], s.sql


async def test_rehearsal_fingerprints_match_the_offline_render(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    target = Target("main", scripts)
    plan = make_plan(sd, (), "upgrade", INDEXES)
    exact = await rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=target)
    offline = offline_capture(sd, plan, target)
    assert exact.exact is True, exact.note
    for rev_exact, rev_offline in zip(exact.revisions, offline.revisions, strict=True):
        assert {s.fingerprint for s in rev_exact.statements} == {
            s.fingerprint for s in rev_offline.statements
        }, rev_exact.revision
    # literal values offline, driver parameters in the rehearsal: same fingerprint
    insert_offline = find(offline, SEED, "INSERT")
    insert_exact = find(exact, SEED, "INSERT")
    assert "'ann'" in insert_offline.sql and "$1" in insert_exact.sql
    assert insert_offline.fingerprint == insert_exact.fingerprint
    assert find(offline, SEED, "UPDATE").fingerprint == find(exact, SEED, "UPDATE").fingerprint


async def test_plan_from_mid_history_replays_first(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, (SEED,), "upgrade", "heads")
    cap = await rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=Target("main", scripts))
    assert cap.exact is True, cap.note
    assert [r.revision for r in cap.revisions] == [INDEXES, BACKFILL]
    assert cap.statements[0].sql.startswith("ALTER TABLE customers ADD COLUMN extra")
    assert not any("CREATE TABLE customers" in s.sql for s in cap.statements)
    # the replayed seed rows are there: the backfill updated both
    assert sum(s.sql.startswith("UPDATE") for s in cap.revisions[1].statements) == 2


async def test_downgrade_plan(tmp_path: Path, plain_db_url: str, no_leftovers: list[str]) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, (BACKFILL,), "downgrade", SEED)
    cap = await rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=Target("main", scripts))
    assert cap.exact is True, cap.note
    assert [r.revision for r in cap.revisions] == [BACKFILL, INDEXES]
    drop_index = find(cap, INDEXES, "DROP INDEX ix_customers_name")
    # the index's table is locked: the text names only the index
    assert RelationLock("public.customers", ACCESS_EXCLUSIVE) in (drop_index.observed_locks or ())
    assert not any(r.data_dependent for r in cap.revisions)


async def test_plan_on_two_heads_and_a_revision_that_sends_nothing(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    scripts = make_project(tmp_path)
    add_revision(scripts, "d4d4d4d4d4d4", SEED, 'op.execute("CREATE TABLE notes (id int)")')
    add_revision(scripts, "e5e5e5e5e5e5", ("d4d4d4d4d4d4", INDEXES), "pass")  # type: ignore[arg-type]
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, ("d4d4d4d4d4d4", INDEXES), "upgrade", "heads")
    cap = await rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=Target("main", scripts))
    assert cap.exact is True, cap.note
    assert sorted(r.revision for r in cap.revisions) == sorted([BACKFILL, "e5e5e5e5e5e5"])
    merge = [r for r in cap.revisions if r.revision == "e5e5e5e5e5e5"][0]
    assert merge.statements == () and merge.data_dependent is False


async def test_fallback_when_the_role_cannot_create_databases(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    role = "r_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(plain_db_url)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
        scripts = make_project(tmp_path)
        sd = ScriptDirectory(str(scripts))
        target = Target("main", scripts)
        plan = make_plan(sd, (), "upgrade", "heads")
        url = make_url(plain_db_url).set(username=role, password=None)
        cap = await rehearse(
            server_url=url.render_as_string(hide_password=False), sd=sd, plan=plan, target=target
        )
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
    assert cap.exact is False and cap.source == "offline"
    assert cap.note and "may not create databases" in cap.note
    assert cap.rehearsal_error and "permission denied" in cap.rehearsal_error
    assert [r.revision for r in cap.revisions] == [SEED, INDEXES, BACKFILL]
    assert cap.statements == offline_capture(sd, plan, target).statements


async def test_fallback_when_the_server_is_unreachable(tmp_path: Path) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, (), "upgrade", SEED)
    cap = await rehearse(
        server_url="postgresql://postgres@127.0.0.1:1/postgres",
        sd=sd,
        plan=plan,
        target=Target("main", scripts),
    )
    assert cap.exact is False and cap.note and "could not be reached" in cap.note
    assert cap.rehearsal_error and len(cap.rehearsal_error) <= 300
    assert len(cap.statements) == 4


async def test_fallback_when_a_revision_fails(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    scripts = make_project(tmp_path)
    broken = "f6f6f6f6f6f6"
    add_revision(scripts, broken, BACKFILL, 'op.execute("ALTER TABLE missing ADD COLUMN x int")')
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, (SEED,), "upgrade", "heads")
    cap = await rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=Target("main", scripts))
    assert cap.exact is False and cap.source == "offline"
    assert cap.rehearsal_error and f"at revision {broken}" in cap.rehearsal_error
    assert 'relation "missing" does not exist' in cap.rehearsal_error
    assert "\n" not in cap.rehearsal_error and len(cap.rehearsal_error) <= 300
    assert cap.note and broken in cap.note
    assert [r.revision for r in cap.revisions] == [INDEXES, BACKFILL, broken]


async def test_fallback_when_the_history_does_not_replay(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    scripts = make_project(tmp_path)
    # the first revision expects a table made outside the migrations
    add_revision(scripts, "a0a0a0a0a0a0", None, 'op.execute("ALTER TABLE legacy ADD x int")')
    add_revision(scripts, "a9a9a9a9a9a9", "a0a0a0a0a0a0", 'op.execute("SELECT 1")')
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, ("a0a0a0a0a0a0",), "upgrade", "a9a9a9a9a9a9")
    cap = await rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=Target("main", scripts))
    assert cap.exact is False
    assert cap.note and "the history does not replay from base" in cap.note
    assert cap.rehearsal_error and "legacy" in cap.rehearsal_error
    assert [s.sql for s in cap.statements] == ["SELECT 1"]


async def test_cancelled_rehearsal_drops_its_database(
    tmp_path: Path, plain_db_url: str, no_leftovers: list[str]
) -> None:
    scripts = make_project(tmp_path)
    add_revision(scripts, "f7f7f7f7f7f7", BACKFILL, 'op.execute("SELECT pg_sleep(60)")')
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, (BACKFILL,), "upgrade", "heads")
    task = asyncio.create_task(
        rehearse(server_url=plain_db_url, sd=sd, plan=plan, target=Target("main", scripts))
    )
    admin = await asyncpg.connect(plain_db_url)
    try:

        async def sleeping() -> bool:
            """the rehearsal's pg_sleep running in its scratch database"""
            return bool(
                await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
                    "AND datname LIKE 'dashboard\\_rehearsal\\_%'"
                )
            )

        await wait_until_async(sleeping, timeout_s=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(no_leftovers) == 1
    finally:
        await admin.close()


async def test_drop_leftovers_drops_only_old_scratch_databases(plain_db_url: str) -> None:
    old = queries.scratch_name(time.time() - 2 * 3600)
    fresh = queries.scratch_name()
    admin = await asyncpg.connect(plain_db_url)
    try:
        for name in (old, fresh):
            await admin.execute(queries.create_database_sql(name))
        dropped = await drop_leftovers(plain_db_url)
        assert old in dropped and fresh not in dropped
        remaining = {r[0] for r in await admin.fetch(SCRATCH)}
        assert old not in remaining and fresh in remaining
    finally:
        await admin.execute(queries.drop_database_sql(fresh))
        await admin.execute(queries.drop_database_sql(old))
        await admin.close()


def test_scratch_names() -> None:
    name = queries.scratch_name(1_700_000_000)
    assert name.startswith("dashboard_rehearsal_1700000000_")
    assert queries.scratch_created_at(name) == 1_700_000_000
    assert queries.scratch_created_at("dashboard_rehearsal_x") is None
    with pytest.raises(ValueError):
        queries.drop_database_sql('postgres"; DROP ROLE x; --')
