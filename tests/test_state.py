"""The dashboard's own schema: created by its own shipped migrations, idempotent across
processes, configurable name, append-only audit enforced by the database."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import delete

from dashboard.audit.log import AuditEvent, AuditLog
from dashboard.audit.repo import AuditRepository
from dashboard.runs.errors import RunConflict
from dashboard.runs.records import Run
from dashboard.runs.repo import RunRepo
from dashboard.state import ALL_STATUSES
from dashboard.state import model as m
from dashboard.state.migrate import state_script_directory
from dashboard.state.store import StateStore


async def test_schema_created_by_own_migrations(db_url: str, plain_db_url: str) -> None:
    stores = [StateStore(db_url, "dashboard") for _ in range(3)]
    try:
        await asyncio.gather(*(s.ensure() for s in stores))
        applied = [s.applied for s in stores]
        script = state_script_directory()
        heads = list(script.get_heads())
        every = tuple(r.revision for r in reversed(list(script.walk_revisions())))
        assert sorted(map(tuple, applied)) == [(), (), every]  # exactly one upgraded
    finally:
        for s in stores:
            await s.stop()
    conn = await asyncpg.connect(plain_db_url)
    try:
        assert [
            r[0] for r in await conn.fetch("SELECT version_num FROM dashboard.dashboard_version")
        ] == heads
        tables = {
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'dashboard'"
            )
        }
        assert tables >= {"runs", "run_log", "audit", "dashboard_version"}
        # the target's own version table is untouched
        assert await conn.fetchval("SELECT to_regclass('public.alembic_version')") is None
    finally:
        await conn.close()


async def test_custom_schema_and_run_status_model(db_url: str) -> None:
    store = StateStore(db_url, "ops_dash")
    try:
        await store.ensure()
        base = {
            "target": "main",
            "direction": "upgrade",
            "target_spec": "heads",
            "to_rev": "x",
            "to_revs": ["x"],
            "from_revs": [],
            "plan": {"steps": []},
            "sql_sha256": "0" * 64,
            "requested_by": "alice",
        }
        repo = RunRepo(store, AuditLog(store))

        async def insert(values: dict[str, Any]) -> Run:
            return await repo.insert(values, lambda run: ([], []))

        for status in ALL_STATUSES:
            if status not in ("queued", "running"):
                await insert({**base, "status": status})
        first = await insert({**base, "status": "queued"})
        with pytest.raises(RunConflict) as busy:
            await insert({**base, "status": "queued", "requested_by": "bob"})
        assert f"run {first.id} by alice" in str(busy.value)
        assert busy.value.code == "busy" and busy.value.extra["run_id"] == first.id
        moved = await repo.transition(
            first.id, ["queued"], {"status": "running", "started_at": "now"}
        )
        assert moved is not None and moved.status == "running"
        assert await repo.transition(first.id, ["queued"], {"status": "failed"}) is None
        with pytest.raises(Exception, match="runs_status_check"):
            await insert({**base, "status": "approved"})
    finally:
        await store.stop()


async def test_audit_is_append_only(db_url: str, plain_db_url: str) -> None:
    store = StateStore(db_url, "dashboard")
    try:
        await store.ensure()
        event = AuditEvent(
            actor="alice",
            action="run.request",
            outcome="created",
            address="10.0.0.1",
            detail={"run_id": 1},
        )
        async with store.begin() as conn:
            audit_id = await AuditLog(store).write(event, conn)
        rows = await AuditRepository(store).entries()
        assert rows[0].id == audit_id and rows[0].detail == {"run_id": 1}
        with pytest.raises(Exception, match="append-only"):
            async with store.begin() as conn:
                await conn.execute(delete(m.audit).where(m.audit.c.id == audit_id))
    finally:
        await store.stop()
    conn = await asyncpg.connect(plain_db_url)
    try:
        for sql in (
            "UPDATE dashboard.audit SET actor = 'mallory'",
            "DELETE FROM dashboard.audit",
            "TRUNCATE dashboard.audit",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT actor FROM dashboard.audit") == "alice"
    finally:
        await conn.close()
