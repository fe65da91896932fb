"""What a migration run left behind, read from a real catalog: invalid indexes (a failed
CREATE UNIQUE INDEX CONCURRENTLY), one being built right now, NOT VALID constraints, the
dashboard's own schema left out; `/api/migrations` and the pages; the runs' `attempts`
and `warnings` columns (state migration state_0004) and how a run shows them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from dashboard.app import create_app
from dashboard.audit.log import AuditLog
from dashboard.db import create_diagnostics_engine
from dashboard.migrations.catalog import read_schema_warnings, read_schema_warnings_sync
from dashboard.migrations.leftovers import (
    INVALID_INDEX,
    NOT_VALID_CONSTRAINT,
    SchemaWarning,
    invalid_index_warning,
)
from dashboard.migrations.status import StatusService
from dashboard.runs.repo import RunRepo
from dashboard.runs.views import run_json
from dashboard.settings import Settings
from dashboard.state.migrate import state_script_directory
from dashboard.state.store import StateStore
from dashboard.targets import Target
from tests.migrate import alembic_to
from tests.test_state_roles import as_role, fresh_roles
from tests.waiting import wait_until_async

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "alembic"


async def failed_unique_index(conn: asyncpg.Connection, schema: str, table: str) -> None:
    """A table with duplicate values and the INVALID index a failed
    CREATE UNIQUE INDEX CONCURRENTLY leaves on it (asyncpg runs it in autocommit)."""
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'CREATE TABLE "{schema}"."{table}" (email text)')
    await conn.execute(f"INSERT INTO \"{schema}\".\"{table}\" VALUES ('a'), ('a'), ('b')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            f'CREATE UNIQUE INDEX CONCURRENTLY "{table}_email_key" ON "{schema}"."{table}" (email)'
        )
    valid = await conn.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
        f'"{schema}"."{table}_email_key"',
    )
    assert valid is False


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(db_url, poolclass=NullPool)
    try:
        yield eng
    finally:
        await eng.dispose()


async def test_invalid_index_not_valid_constraints_and_excluded_schema(
    plain_db_url: str, engine: AsyncEngine
) -> None:
    conn = await asyncpg.connect(plain_db_url)
    try:
        await failed_unique_index(conn, "public", "Users")
        await failed_unique_index(conn, "dashboard", "own")  # the dashboard's: left out
        await conn.execute(
            "CREATE TABLE parent (id int PRIMARY KEY);"
            "CREATE TABLE child (id int, parent_id int, n int);"
            "INSERT INTO child VALUES (1, 99, -1);"
            "ALTER TABLE child ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent_id) "
            "  REFERENCES parent (id) NOT VALID;"
            "ALTER TABLE child ADD CONSTRAINT child_n_positive CHECK (n > 0) NOT VALID;"
        )
    finally:
        await conn.close()

    async with engine.connect() as c:
        warnings = await read_schema_warnings(c, exclude_schemas=["dashboard"])
        every = await c.run_sync(lambda s: read_schema_warnings_sync(s, exclude_schemas=[]))
    by_name = {w.name: w for w in warnings}
    assert set(by_name) == {
        'public."Users_email_key"',
        "public.child.child_parent_fk",
        "public.child.child_n_positive",
    }
    ix = by_name['public."Users_email_key"']
    assert ix.kind == INVALID_INDEX and not ix.in_progress
    assert ix.table == 'public."Users"'
    assert ix.fix == 'DROP INDEX CONCURRENTLY public."Users_email_key";'
    assert "INVALID" in ix.message
    fk = by_name["public.child.child_parent_fk"]
    assert fk.kind == NOT_VALID_CONSTRAINT and "foreign key" in fk.message
    assert fk.fix == "ALTER TABLE public.child VALIDATE CONSTRAINT child_parent_fk;"
    assert "check constraint" in by_name["public.child.child_n_positive"].message
    # without the exclusion the dashboard schema's leftover shows too
    assert "dashboard.own_email_key" in {w.name for w in every}

    # the fix works: after it, nothing is left
    conn = await asyncpg.connect(plain_db_url)
    try:
        assert ix.fix is not None and fk.fix is not None
        await conn.execute(ix.fix)
        await conn.execute("DELETE FROM child")
        await conn.execute(fk.fix)
        await conn.execute("ALTER TABLE child VALIDATE CONSTRAINT child_n_positive")
    finally:
        await conn.close()
    async with engine.connect() as c:
        assert await read_schema_warnings(c, exclude_schemas=["dashboard"]) == []


async def test_an_index_being_built_right_now_is_told_apart(
    plain_db_url: str, engine: AsyncEngine
) -> None:
    writer = await asyncpg.connect(plain_db_url)
    builder = await asyncpg.connect(plain_db_url)
    build: asyncio.Task[str] | None = None
    try:
        await writer.execute("CREATE TABLE busy (a int)")
        tx = writer.transaction()
        await tx.start()
        await writer.execute("INSERT INTO busy VALUES (1)")  # CONCURRENTLY waits for it
        build = asyncio.create_task(builder.execute("CREATE INDEX CONCURRENTLY busy_a ON busy (a)"))

        async def building() -> SchemaWarning | None:
            async with engine.connect() as c:
                ws = await read_schema_warnings(c, exclude_schemas=[])
            return next((w for w in ws if w.name == "public.busy_a"), None)

        w = await wait_until_async(building, what="the running build's index in the catalog")
        assert w.kind == INVALID_INDEX and w.in_progress and w.fix is None
        assert "being built right now" in w.message
        await tx.rollback()
        await build
        async with engine.connect() as c:
            assert await read_schema_warnings(c, exclude_schemas=[]) == []
    finally:
        if build is not None and not build.done():
            build.cancel()
        await writer.close()
        await builder.close()


def settings(url: str, **extra: str) -> Settings:
    env = {"DASHBOARD_DATABASE_URL": url, "DASHBOARD_AUTH_MODE": "none"}
    env.update(extra)
    return Settings.from_env(env)


async def test_api_and_pages_show_schema_warnings(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, "8b2e4d6f1a02")
    conn = await asyncpg.connect(plain_db_url)
    try:
        await failed_unique_index(conn, "public", "accounts")
        await failed_unique_index(conn, "ops_dash", "mine")  # the configured own schema
    finally:
        await conn.close()
    app = create_app(settings(db_url, DASHBOARD_SCHEMA="ops_dash"))
    async with AsyncTestClient(app) as client:
        body: dict[str, Any] = (await client.get("/api/migrations")).json()
        assert body["state"] == "pending"
        (w,) = body["schema_warnings"]
        assert set(w) >= {"kind", "name", "message", "fix"}
        assert w["kind"] == "invalid_index" and w["name"] == "public.accounts_email_key"
        assert w["fix"] == "DROP INDEX CONCURRENTLY public.accounts_email_key;"
        for path in ("/migrations", "/"):
            html = (await client.get(path)).text
            assert 'id="schema-warnings"' in html and 'data-count="1"' in html
            assert 'data-name="public.accounts_email_key"' in html
            assert "DROP INDEX CONCURRENTLY public.accounts_email_key;" in html
            assert "mine_email_key" not in html
    # nothing at all when there are none
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute("DROP INDEX CONCURRENTLY public.accounts_email_key")
    finally:
        await conn.close()
    async with AsyncTestClient(create_app(settings(db_url, DASHBOARD_SCHEMA="ops_dash"))) as c:
        assert (await c.get("/api/migrations")).json()["schema_warnings"] == []
        for path in ("/migrations", "/"):
            assert 'id="schema-warnings"' not in (await c.get(path)).text


async def test_status_survives_a_catalog_it_cannot_read(
    db_url: str, plain_db_url: str, db_name: str
) -> None:
    role = "lo_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(plain_db_url)
    try:
        await failed_unique_index(conn, "public", "t")
        # in this (throwaway) database only: the progress view is not readable by PUBLIC
        await conn.execute("REVOKE SELECT ON pg_catalog.pg_stat_progress_create_index FROM PUBLIC")
    finally:
        await conn.close()
    async with fresh_roles(plain_db_url, db_name, role):
        eng = create_diagnostics_engine(as_role(db_url, role))
        try:
            status = await StatusService(eng, Target("main", DEMO)).read(fresh=True)
        finally:
            await eng.dispose()
    assert status.state == "uninitialized"
    assert status.schema_warnings == []
    assert status.schema_warnings_note and "could not be read" in status.schema_warnings_note
    assert status.to_json()["schema_warnings"] == []


async def test_state_migration_adds_attempts_and_warnings(db_url: str, plain_db_url: str) -> None:
    assert "state_0004" in {r.revision for r in state_script_directory().walk_revisions()}
    store = StateStore(db_url, "dashboard")
    try:
        await store.ensure()
        repo = RunRepo(store, AuditLog(store))
        run = await repo.insert(
            {
                "target": "main",
                "direction": "upgrade",
                "target_spec": "heads",
                "to_rev": "x",
                "to_revs": ["x"],
                "from_revs": [],
                "plan": {"steps": []},
                "sql_sha256": "0" * 64,
                "requested_by": "alice",
                "status": "running",
            },
            lambda run: ([], []),
        )
        assert (run.attempts, run.warnings) == (None, None)
        left = invalid_index_warning("public.ix", "public.t").to_json()
        done = await repo.transition(
            run.id, ("running",), {"status": "succeeded", "attempts": 3, "warnings": [left]}
        )
        assert done is not None and (done.attempts, done.warnings) == (3, [left])
        stored = await repo.get(run.id)
        assert stored is not None and stored.warnings == [left] and stored.attempts == 3
        data = run_json(stored, None, now=datetime.now(UTC))
        assert (data["attempts"], data["warnings"], data["clean"]) == (3, [left], False)
        assert SchemaWarning.from_json(data["warnings"][0]).fix == left["fix"]
    finally:
        await store.stop()
    conn = await asyncpg.connect(plain_db_url)
    try:
        cols = {
            r["column_name"]: r["data_type"]
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'dashboard' AND table_name = 'runs' "
                "AND column_name IN ('attempts', 'warnings')"
            )
        }
        assert cols == {"attempts": "integer", "warnings": "jsonb"}
    finally:
        await conn.close()


async def test_run_page_shows_what_the_run_left(db_url: str) -> None:
    store = StateStore(db_url, "dashboard")
    left = invalid_index_warning("public.ix", "public.t").to_json()
    try:
        await store.ensure()
        repo = RunRepo(store, AuditLog(store))
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
            "status": "running",
        }
        clean = await repo.insert(base, lambda run: ([], []))
        await repo.transition(clean.id, ("running",), {"status": "succeeded", "warnings": []})
        warned = await repo.insert(base, lambda run: ([], []))  # the newest: on the Overview
        await repo.transition(warned.id, ("running",), {"status": "succeeded", "warnings": [left]})
    finally:
        await store.stop()
    async with AsyncTestClient(create_app(settings(db_url))) as client:
        api = (await client.get(f"/api/runs/{warned.id}")).json()
        assert (api["warnings"], api["clean"], api["attempts"]) == ([left], False, 0)
        assert (await client.get(f"/api/runs/{clean.id}")).json()["clean"] is True
        html = (await client.get(f"/runs/{warned.id}")).text
        assert 'id="run-warnings"' in html and 'data-count="1"' in html
        assert "succeeded · 1 warning" in html and "runs-status-warned" in html
        assert "DROP INDEX CONCURRENTLY public.ix;" in html
        plain = (await client.get(f"/runs/{clean.id}")).text
        assert 'id="run-warnings"' not in plain and "runs-status-warned" not in plain
        home = (await client.get("/")).text  # the runs card's badge
        assert 'id="runs-card"' in home and "succeeded · 1 warning" in home
