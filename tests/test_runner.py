"""The runner against real PostgreSQL: branches and merges both ways, autocommit
revisions, compare-and-swap, one run at a time, lock timeouts with the blocker named,
failures halfway, cancel, proof of commit, env.py mode, and a sync-engine project."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dashboard.runs.errors import RunConflict
from dashboard.runs.records import Run
from dashboard.runs.service import RunService
from tests.migrate import alembic_to
from tests.runs_support import (
    ACK_BACKFILL,
    BACKFILL,
    BASE,
    DEMO,
    ENUM_REV,
    HEAD,
    MERGE,
    add_revision,
    approve_and_execute,
    running_runner,
    sleep_sql,
    wait_done,
    wait_for,
)

CATALOG = "c4d8e1f2a903"
NOTES = "d5e9f3a4b804"


async def version(plain: str) -> list[str]:
    conn = await asyncpg.connect(plain)
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version ORDER BY 1")
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def request(
    runner: RunService,
    direction: str,
    target: str,
    current: list[str],
    acknowledge: object = None,
) -> dict[str, Any]:
    row = await runner.request(
        actor="tester",
        address="127.0.0.1",
        direction=direction,
        target=target,
        expected_current=current,
        acknowledge=acknowledge,
    )
    if row.status == "awaiting_approval":  # downgrades always need a second person
        await approve_and_execute(runner, row.id, acknowledge)
    return await wait_done(runner, row.id)


async def test_upgrade_and_downgrade_across_branch_and_merge(
    db_url: str, plain_db_url: str
) -> None:
    async with running_runner(db_url) as runner:
        run = await request(runner, "upgrade", "+2", [])
        assert run["status"] == "succeeded", run["error"]
        # base, then the first branch revision in apply order
        assert run["verified_revs"] == await version(plain_db_url)
        assert len(run["verified_revs"]) == 1
        run = await request(runner, "upgrade", ENUM_REV, run["verified_revs"])
        assert run["status"] == "succeeded", run["error"]
        assert run["verified_revs"] == [ENUM_REV]
        steps = [s["revision"] for s in run["plan"]["steps"]]
        assert MERGE in steps and steps.index(MERGE) < steps.index(ENUM_REV)
        # downgrade through the merge: un-merges into two heads
        run = await request(runner, "downgrade", NOTES, [ENUM_REV])
        assert run["status"] == "succeeded", run["error"]
        assert run["verified_revs"] == sorted([CATALOG, NOTES]) == await version(plain_db_url)
        # downgrading both branches down to their branch point
        run = await request(runner, "downgrade", BASE, sorted([CATALOG, NOTES]))
        assert run["status"] == "succeeded", run["error"]
        assert await version(plain_db_url) == [BASE]
        # and up again, merge included
        run = await request(runner, "upgrade", MERGE, [BASE])
        assert run["status"] == "succeeded" and await version(plain_db_url) == [MERGE]
        assert [e["event"] for e in run["log"]].count("revision_applied") == 3
        run = await request(runner, "downgrade", "base", [MERGE])
        assert run["status"] == "succeeded" and await version(plain_db_url) == []


async def test_autocommit_revisions_enum_and_concurrent_index(
    db_url: str, plain_db_url: str
) -> None:
    async with running_runner(db_url) as runner:
        run = await request(runner, "upgrade", "heads", [], ACK_BACKFILL)
        assert run["status"] == "succeeded", run["error"]
        assert run["verified_revs"] == [HEAD]
    conn = await asyncpg.connect(plain_db_url)
    try:
        labels = await conn.fetchval(
            "SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum "
            "WHERE enumtypid = 'order_status'::regtype"
        )
        assert "refunded" in labels
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_orders_customer_created'::regclass"
        )
        assert valid is True
        cols = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers'"
        )
        names = {c[0] for c in cols}
        assert "order_count" in names and "legacy_phone" not in names
    finally:
        await conn.close()


async def test_downgrade_of_autocommit_index_revision(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BACKFILL)
    async with running_runner(db_url) as runner:
        run = await request(runner, "downgrade", ENUM_REV, [BACKFILL])
        assert run["status"] == "succeeded", run["error"]
        assert await version(plain_db_url) == [ENUM_REV]


async def test_compare_and_swap(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with running_runner(db_url, require_approval=True) as runner:
        with pytest.raises(RunConflict) as refused:
            await runner.request(
                actor="t", address=None, direction="upgrade", target="heads", expected_current=[]
            )
        assert refused.value.extra["actual_current"] == [BASE]
        waiting = await runner.request(
            actor="t", address=None, direction="upgrade", target="+1", expected_current=[BASE]
        )
        assert waiting.status == "awaiting_approval"
        # the database moves before the run starts (someone ran alembic by hand)
        await alembic_to(db_url, DEMO, MERGE)
        await runner.enqueue(waiting.id, actor="t")
        run = await wait_done(runner, waiting.id)
        assert run["status"] == "failed"
        assert "moved" in run["error"] and run["error_detail"]["actual_current"] == [MERGE]
        assert run["started_at"] is None
    assert await version(plain_db_url) == [MERGE]


async def test_two_requests_in_one_process_one_runs(
    db_url: str, demo_scripts: Path, plain_db_url: str
) -> None:
    add_revision(demo_scripts, "bb01slow0001", HEAD, "op.execute('SELECT pg_sleep(1)')")
    await alembic_to(db_url, demo_scripts, HEAD)
    async with running_runner(db_url, demo_scripts) as runner:
        results = await asyncio.gather(
            *(
                runner.request(
                    actor=f"u{i}",
                    address=None,
                    direction="upgrade",
                    target="heads",
                    expected_current=[HEAD],
                )
                for i in range(2)
            ),
            return_exceptions=True,
        )
        ok = [r for r in results if isinstance(r, Run)]
        refused = [r for r in results if isinstance(r, RunConflict)]
        assert len(ok) == 1 and len(refused) == 1, results
        assert f"run {ok[0].id} by {ok[0].requested_by} is in progress" in refused[0].message
        assert (await wait_done(runner, ok[0].id))["status"] == "succeeded"
    assert await version(plain_db_url) == ["bb01slow0001"]


async def test_advisory_lock_across_dashboards_with_separate_state(
    db_url: str, demo_scripts: Path, plain_db_url: str
) -> None:
    """Two dashboards keeping their state in different schemas still serialize on the
    target's advisory lock (database + version table)."""
    add_revision(demo_scripts, "cc01slow0001", HEAD, f"op.execute({sleep_sql(1.5)!r})")
    await alembic_to(db_url, demo_scripts, HEAD)
    async with (
        running_runner(db_url, demo_scripts, schema="dash_a") as a,
        running_runner(db_url, demo_scripts, schema="dash_b") as b,
    ):
        first = await a.request(
            actor="alice",
            address=None,
            direction="upgrade",
            target="heads",
            expected_current=[HEAD],
        )
        await wait_for(a, first.id, lambda r: r["status"] == "running")
        with pytest.raises(RunConflict) as busy:
            await b.request(
                actor="bob",
                address=None,
                direction="upgrade",
                target="heads",
                expected_current=[HEAD],
            )
        assert f"run {first.id} by alice is in progress" in busy.value.message
        assert (await wait_done(a, first.id))["status"] == "succeeded"
    assert await version(plain_db_url) == ["cc01slow0001"]


async def test_lock_timeout_names_table_and_blocker(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    holder = await asyncpg.connect(plain_db_url)
    reader = await asyncpg.connect(plain_db_url)
    try:
        # A long transaction reading orders (ACCESS SHARE): the migration's ALTER TABLE
        # needs ACCESS EXCLUSIVE and queues behind it.
        holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
        await holder.execute("BEGIN; LOCK TABLE orders IN ACCESS SHARE MODE")
        async with running_runner(db_url, lock_timeout_ms=1200) as runner:
            row = await runner.request(
                actor="t", address=None, direction="upgrade", target=NOTES, expected_current=[BASE]
            )
            await wait_for(
                runner,
                row.id,
                lambda r: (r["progress"].get("lock_wait") or None) is not None,
                within_s=10,
            )
            # A third session's read queues behind the waiting ALTER, at most lock_timeout.
            t0 = time.monotonic()
            await reader.fetchval("SELECT count(*) FROM orders")
            blocked_s = time.monotonic() - t0
            run = await wait_done(runner, row.id)
        assert blocked_s < 1.2 + 0.8, blocked_s
        assert run["status"] == "failed"
        assert run["error_detail"]["sqlstate"] == "55P03"
        assert run["error_detail"]["revision"] == NOTES
        assert "ALTER TABLE orders" in run["error_detail"]["statement"]
        assert "orders" in run["error"] and f"pid {holder_pid}" in run["error"]
        assert "LOCK TABLE orders" in run["error"]
        assert run["verified_revs"] == [BASE]
    finally:
        await holder.close()
        await reader.close()
    assert await version(plain_db_url) == [BASE]


async def test_revision_raising_halfway(db_url: str, demo_scripts: Path, plain_db_url: str) -> None:
    add_revision(
        demo_scripts,
        "dd01good0001",
        HEAD,
        "op.create_table('good_one', sa.Column('id', sa.Integer, primary_key=True))",
    )
    add_revision(
        demo_scripts,
        "dd02bad00002",
        "dd01good0001",
        """
                 op.create_table('half_done', sa.Column('id', sa.Integer, primary_key=True))
                 op.execute("SELECT 1 / (SELECT count(*) FROM half_done)")
                 """,
    )
    await alembic_to(db_url, demo_scripts, HEAD)
    async with running_runner(db_url, demo_scripts) as runner:
        run = await request(runner, "upgrade", "heads", [HEAD])
    assert run["status"] == "failed"
    assert run["error_detail"]["revision"] == "dd02bad00002"
    assert "division by zero" in run["error_detail"]["server_error"]
    assert "SELECT 1 / (SELECT count(*) FROM half_done)" in run["error_detail"]["statement"]
    assert "dd02bad00002" in run["error"] and "division by zero" in run["error"]
    # the earlier revision stays applied and recorded; the failing one left nothing
    assert run["verified_revs"] == ["dd01good0001"] == await version(plain_db_url)
    states = {s["revision"]: s["state"] for s in run["progress"]["steps"]}
    assert states == {"dd01good0001": "applied", "dd02bad00002": "failed"}
    conn = await asyncpg.connect(plain_db_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('good_one') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('half_done') IS NULL")
    finally:
        await conn.close()


async def test_cancel_during_long_statement(
    db_url: str, demo_scripts: Path, plain_db_url: str
) -> None:
    add_revision(demo_scripts, "ee01first001", HEAD, "op.execute('CREATE TABLE ee_first (id int)')")
    add_revision(demo_scripts, "ee02sleep002", "ee01first001", "op.execute('SELECT pg_sleep(30)')")
    await alembic_to(db_url, demo_scripts, HEAD)
    async with running_runner(db_url, demo_scripts) as runner:
        row = await runner.request(
            actor="t", address=None, direction="upgrade", target="heads", expected_current=[HEAD]
        )
        await wait_for(
            runner,
            row.id,
            lambda r: "pg_sleep" in (r["progress"].get("current_statement") or ""),
        )
        t0 = time.monotonic()
        await runner.cancel(row.id, actor="carol", address="127.0.0.1")
        run = await wait_done(runner, row.id, within_s=15)
        assert time.monotonic() - t0 < 5
    assert run["status"] == "cancelled"
    assert "carol" in run["error"] and "ee02sleep002" in run["error"]
    assert run["verified_revs"] == ["ee01first001"] == await version(plain_db_url)


async def test_cancel_from_another_dashboard_process_state(
    db_url: str, demo_scripts: Path, plain_db_url: str
) -> None:
    """A cancel recorded in the state store (as another dashboard process would) is
    noticed by the owner's heartbeat and signalled to the migration backend."""
    add_revision(demo_scripts, "ff01sleep001", HEAD, "op.execute('SELECT pg_sleep(30)')")
    await alembic_to(db_url, demo_scripts, HEAD)
    async with running_runner(db_url, demo_scripts) as runner:
        row = await runner.request(
            actor="t", address=None, direction="upgrade", target="heads", expected_current=[HEAD]
        )
        await wait_for(
            runner,
            row.id,
            lambda r: "pg_sleep" in (r["progress"].get("current_statement") or ""),
        )
        await runner.repo.request_cancel(row.id, "dave")
        run = await wait_done(runner, row.id, within_s=10)
    assert run["status"] == "cancelled" and "dave" in run["error"]
    assert await version(plain_db_url) == [HEAD]


NON_COMMITTING_ENV = """
from alembic import context
from sqlalchemy import text

connection = context.config.attributes["connection"]
# A common pattern that silently breaks Alembic's commit: any statement before
# configure() autobegins a transaction that Alembic then treats as the caller's.
connection.execute(text("SET LOCAL statement_timeout = 0"))
context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
"""


async def test_proof_of_commit_catches_non_committing_env(
    db_url: str, demo_scripts: Path, plain_db_url: str
) -> None:
    (demo_scripts / "env.py").write_text(NON_COMMITTING_ENV)
    await alembic_to(db_url, DEMO, BASE)
    async with running_runner(db_url, demo_scripts, run_env_py=True) as runner:
        run = await request(runner, "upgrade", "+2", [BASE])
    assert run["status"] == "failed"
    assert "proof of commit failed" in run["error"]
    assert "still inside a transaction" in run["error"]
    assert run["error_detail"]["verified"] == [BASE]
    # Alembic logged the revisions as applied; the database disagrees, and the run says so
    assert [e["event"] for e in run["log"]].count("revision_applied") == 2
    assert await version(plain_db_url) == [BASE]


async def test_env_py_mode_with_connection_aware_env(db_url: str, plain_db_url: str) -> None:
    async with running_runner(db_url, run_env_py=True) as runner:
        run = await request(runner, "upgrade", "heads", [], ACK_BACKFILL)
    assert run["status"] == "succeeded", run["error"]
    assert await version(plain_db_url) == [HEAD]


def _alembic_init(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "alembic"), "init", "migrations"],
        cwd=proj,
        check=True,
        capture_output=True,
        timeout=60,
    )
    versions = proj / "migrations" / "versions"
    (versions / "a1b2c3d4e5f6_widgets.py").write_text('''"""widgets

Revision ID: a1b2c3d4e5f6
Revises:
Create Date: 2026-11-22 10:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = "a1b2c3d4e5f6"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))
    with op.get_context().autocommit_block():
        op.create_index("ix_widgets_id", "widgets", ["id"], postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_table("widgets")
''')
    # the default template's env.py builds its own sync engine from sqlalchemy.url
    assert "engine_from_config" in (proj / "migrations" / "env.py").read_text()
    return proj / "migrations"


async def test_sync_engine_project_default_template(
    db_url: str, plain_db_url: str, tmp_path: Path
) -> None:
    scripts = _alembic_init(tmp_path)
    async with running_runner(db_url, scripts) as runner:
        pv = await runner.preview("upgrade", "heads")
        assert "CREATE TABLE widgets" in pv.sql
        run = await request(runner, "upgrade", "heads", [])
        assert run["status"] == "succeeded", run["error"]
        assert run["verified_revs"] == ["a1b2c3d4e5f6"] == await version(plain_db_url)
        run = await request(runner, "downgrade", "base", ["a1b2c3d4e5f6"])
        assert run["status"] == "succeeded" and await version(plain_db_url) == []


async def test_env_py_mode_refuses_env_that_ignores_the_connection(
    db_url: str, tmp_path: Path, plain_db_url: str
) -> None:
    scripts = _alembic_init(tmp_path)
    async with running_runner(db_url, scripts, run_env_py=True) as runner:
        run = await request(runner, "upgrade", "heads", [])
    assert run["status"] == "failed"
    assert "config.attributes['connection']" in run["error"]
