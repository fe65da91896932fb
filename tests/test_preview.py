"""Offline SQL preview: exact, deterministic, hashed, and never touching the database."""

from __future__ import annotations

import hashlib

import asyncpg
from alembic.script import ScriptDirectory

from dashboard.migrations.plan import make_plan
from dashboard.migrations.preview import render_preview
from dashboard.targets import Target
from tests.runs_support import BACKFILL, BASE, DEMO, ENUM_REV, HEAD, running_runner

SD = ScriptDirectory(str(DEMO))
TARGET = Target("main", DEMO)


def test_upgrade_sql_is_exact_and_hashed() -> None:
    p = make_plan(SD, (), "upgrade", "heads")
    a = render_preview(SD, p, TARGET)
    b = render_preview(SD, p, TARGET)
    assert a.sql == b.sql and a.sql_sha256 == b.sql_sha256
    assert a.sql_sha256 == hashlib.sha256(a.sql.encode()).hexdigest()
    sql = a.sql
    assert "CREATE TABLE alembic_version" in sql
    assert sql.index("CREATE TABLE customers") < sql.index("CREATE TABLE products")
    assert "ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded'" in sql
    assert "CREATE INDEX CONCURRENTLY" in sql
    assert "ALTER TABLE customers DROP COLUMN legacy_phone" in sql
    assert sql.count("BEGIN;") >= 8  # one transaction per revision
    assert f"UPDATE alembic_version SET version_num='{HEAD}'" in sql
    # the batched backfill reads data: said in the SQL and in the warnings
    assert len(a.warnings) == 1 and BACKFILL in a.warnings[0]
    assert f"-- !! upgrade() of {BACKFILL}" in sql
    assert "-- Running upgrade" in sql


def test_downgrade_sql_from_the_current_revision() -> None:
    p = make_plan(SD, (BACKFILL,), "downgrade", ENUM_REV)
    pv = render_preview(SD, p, TARGET)
    assert "ALTER TABLE customers DROP COLUMN order_count" in pv.sql
    assert "DROP INDEX CONCURRENTLY" in pv.sql
    assert f"UPDATE alembic_version SET version_num='{ENUM_REV}'" in pv.sql
    assert "CREATE TABLE alembic_version" not in pv.sql
    assert pv.warnings == []


def test_version_table_settings_are_used() -> None:
    p = make_plan(SD, (BASE,), "upgrade", "+1")
    pv = render_preview(SD, p, Target("main", DEMO, "shop_version", "ops"))
    assert "ops.shop_version" in pv.sql and "alembic_version" not in pv.sql


async def test_preview_touches_no_database_state(db_url: str, plain_db_url: str) -> None:
    async with running_runner(db_url) as runner:
        pv = await runner.preview("upgrade", "heads")
        assert pv.plan.to_heads == (HEAD,)
        assert await runner.repo.recent() == []
    conn = await asyncpg.connect(plain_db_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('alembic_version')") is None
        assert await conn.fetchval("SELECT to_regclass('customers')") is None
    finally:
        await conn.close()
