"""The approval and audit tables themselves: one decision per run even when two approvers
click at the same moment; and, for a dashboard running as an ordinary (non-superuser)
role that owns its schema, no UPDATE / DELETE / TRUNCATE privilege on audit or approvals."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dashboard.audit.log import AuditEvent, AuditLog
from dashboard.audit.repo import AuditQuery, AuditRepository
from dashboard.runs.records import Run
from dashboard.runs.repo import RunRepo
from dashboard.state.store import StateStore

RUN = {
    "target": "main",
    "direction": "upgrade",
    "target_spec": "heads",
    "to_rev": "x",
    "to_revs": ["x"],
    "from_revs": [],
    "plan": {"steps": []},
    "sql_sha256": "0" * 64,
    "status": "awaiting_approval",
    "requested_by": "carol",
}


def repo_of(store: StateStore) -> RunRepo:
    return RunRepo(store, AuditLog(store))


async def insert_run(store: StateStore, values: dict[str, Any]) -> Run:
    return await repo_of(store).insert(values, lambda run: ([], []))


def approval(who: str, now: datetime) -> dict[str, Any]:
    return {
        "decision": "approve",
        "approver": who,
        "approver_role": "approver",
        "approver_address": "10.0.0.1",
        "reason": None,
        "sql_sha256": "0" * 64,
        "file_sha256": [],
        "current_heads": [],
        "expires_at": now + timedelta(hours=1),
    }


async def test_two_simultaneous_approvals_record_one(db_url: str) -> None:
    stores = [StateStore(db_url), StateStore(db_url)]  # as if two dashboard processes
    try:
        await stores[0].ensure()
        for _ in range(5):
            run = await insert_run(stores[0], dict(RUN))
            now = datetime.now(UTC)
            results = await asyncio.gather(
                *(
                    repo_of(s).decide(
                        run.id,
                        now=now,
                        run_values={"approved_by": who, "approved_at": now},
                        approval=approval(who, now),
                        log=[],
                        audit=[AuditEvent(who, "run.approve", "approved", target=f"run {run.id}")],
                    )
                    for s, who in zip(stores, ("bob", "dave"), strict=True)
                )
            )
            winners = [r for r in results if r is not None]
            assert len(winners) == 1
            row, decided = winners[0]
            assert row.approved_by == decided.approver
            stored = await repo_of(stores[1]).approval(run.id)
            assert stored is not None and stored.approver == row.approved_by
            rows = await AuditRepository(stores[0]).entries(AuditQuery(action="run.approve"))
            assert [r.actor for r in rows if r.target == f"run {run.id}"] == [row.approved_by]
        # an expired request cannot be approved, even by a direct write
        run = await insert_run(stores[0], {**RUN, "expires_at": datetime.now(UTC)})
        later = datetime.now(UTC) + timedelta(seconds=1)
        assert (
            await repo_of(stores[0]).decide(
                run.id,
                now=later,
                run_values={"approved_by": "bob"},
                approval=approval("bob", later),
                log=[],
                audit=[AuditEvent("bob", "run.approve", "approved")],
            )
            is None
        )
        assert await repo_of(stores[0]).approval(run.id) is None
    finally:
        for s in stores:
            await s.stop()


async def test_non_superuser_dashboard_role_cannot_change_history(
    db_url: str, plain_db_url: str, db_name: str
) -> None:
    role = "dash_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(plain_db_url)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    await admin.execute(f'GRANT CREATE ON DATABASE "{db_name}" TO "{role}"')
    store = StateStore(make_url(db_url).set(username=role, password=None).render_as_string(False))
    try:
        try:  # only the login itself depends on the server's pg_hba; nothing else may skip
            probe = await asyncpg.connect(
                make_url(plain_db_url).set(username=role).render_as_string(False)
            )
        except (OSError, asyncpg.PostgresError) as exc:  # pragma: no cover
            msg = f"cannot log in as a fresh role on this server: {exc}"
            if os.environ.get("CI"):
                pytest.fail(msg + " -- may not be skipped in CI")
            pytest.skip(msg)
        await probe.close()
        await store.ensure()
        run = await insert_run(store, dict(RUN))
        now = datetime.now(UTC)
        assert await repo_of(store).decide(
            run.id,
            now=now,
            run_values={"approved_by": "bob", "approved_at": now},
            approval=approval("bob", now),
            log=[],
            audit=[AuditEvent("bob", "run.approve", "approved")],
        )
        conn = await asyncpg.connect(
            make_url(plain_db_url).set(username=role).render_as_string(False)
        )
        try:
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role)
            for table in ("audit", "approvals"):
                assert await conn.fetchval(
                    "SELECT has_table_privilege($1, 'INSERT')", f"dashboard.{table}"
                )
                for priv in ("UPDATE", "DELETE", "TRUNCATE"):
                    assert not await conn.fetchval(
                        "SELECT has_table_privilege($1, $2)", f"dashboard.{table}", priv
                    ), (table, priv)
                for sql in (
                    f"UPDATE dashboard.{table} SET id = id",
                    f"DELETE FROM dashboard.{table}",
                    f"TRUNCATE dashboard.{table} CASCADE",
                ):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(sql)
            assert await conn.fetchval("SELECT count(*) FROM dashboard.audit") == 1
            assert await conn.fetchval("SELECT approver FROM dashboard.approvals") == "bob"
        finally:
            await conn.close()
    finally:
        await store.stop()
        await admin.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.close()
        other = await asyncpg.connect(
            make_url(plain_db_url).set(database="postgres").render_as_string(False)
        )
        try:
            await other.execute(f'REVOKE ALL ON DATABASE "{db_name}" FROM "{role}"')
            await other.execute(f'DROP ROLE "{role}"')
        finally:
            await other.close()
