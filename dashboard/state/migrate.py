"""Create or upgrade the dashboard's own schema with its own shipped Alembic migrations.

The same discipline the runner applies to the target's migrations: Alembic is driven
through `EnvironmentContext` (no env.py) inside `AsyncConnection.run_sync`, on a fresh
NullPool connection that has executed nothing, one transaction per revision. Concurrent
start-ups of several dashboard processes are serialized with an advisory lock held on a
second connection.

In the two-role setup (`DASHBOARD_STATE_OWNER_URL`, README "Two roles") this runs as the
OWNER role, which then grants the runtime role its privileges (`roles.py`).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema

from dashboard.state.model import VERSION_TABLE
from dashboard.state.roles import grant_runtime

STATE_DIR = Path(__file__).resolve().parent
STATE_APP_NAME = "dashboard-state"
# Advisory lock namespace for the state schema upgrade (the runner uses another one).
_STATE_LOCK_NS = 0x44534D  # "DSM"


def state_lock_key(schema: str) -> tuple[int, int]:
    return _STATE_LOCK_NS, _int4(zlib.crc32(f"{schema}.{VERSION_TABLE}".encode()))


def _int4(n: int) -> int:
    return n - (1 << 32) if n >= (1 << 31) else n


def state_script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(STATE_DIR))


def _upgrade(conn: Connection, schema: str) -> list[str]:
    script = state_script_directory()
    config = Config()
    config.set_main_option("script_location", str(STATE_DIR))
    config.attributes["dashboard_schema"] = schema
    applied: list[str] = []

    def fn(rev: Any, context: MigrationContext) -> Any:
        return script._upgrade_revs("heads", rev)

    def on_apply(
        ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Any
    ) -> None:
        applied.append(str(step.up_revision_id))

    with EnvironmentContext(config, script, fn=fn, destination_rev="heads") as env:
        env.configure(
            connection=conn,
            version_table=VERSION_TABLE,
            version_table_schema=schema,
            transaction_per_migration=True,
            on_version_apply=on_apply,
        )
        with env.begin_transaction():
            env.run_migrations()
    return applied


def _current(conn: Connection, schema: str) -> list[str]:
    ctx = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )
    return sorted(ctx.get_current_heads())


async def upgrade_state_schema(
    url: str, schema: str, *, runtime_role: str | None = None
) -> list[str]:
    """Bring `<schema>` to the newest shipped revision; returns the revisions applied.

    With `runtime_role` (the two-role setup: `url` logs in as the OWNER role), that role
    is then given exactly the runtime privileges (`roles.grant_runtime`), every time, so
    a schema migrated before the split, or by an older release, is brought in line too.
    Without it, a schema that is already current is left alone: no DDL, so a runtime
    role that does not own the schema can start against it.
    """
    engine = create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "server_settings": {"application_name": STATE_APP_NAME, "lock_timeout": "10000"},
            "timeout": 10,
        },
    )
    a, b = state_lock_key(schema)
    try:
        async with engine.connect() as lock_conn:
            await lock_conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), {"a": a, "b": b})
            await lock_conn.commit()
            try:
                applied = await _upgrade_locked(engine, lock_conn, schema)
                if runtime_role is not None:
                    await lock_conn.run_sync(grant_runtime, schema, runtime_role)
                    await lock_conn.commit()
                return applied
            finally:
                await lock_conn.rollback()
                await lock_conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": a, "b": b})
                await lock_conn.commit()
    finally:
        await engine.dispose()


async def _upgrade_locked(
    engine: AsyncEngine, lock_conn: AsyncConnection, schema: str
) -> list[str]:
    heads = sorted(state_script_directory().get_heads())
    current = await lock_conn.run_sync(_current, schema)
    await lock_conn.commit()
    if heads == current:
        return []
    # Only when missing: PostgreSQL checks CREATE on the database before IF NOT EXISTS, and
    # an admin may have created the schema for an owner role that has no such right.
    exists = await lock_conn.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"), {"schema": schema}
    )
    if exists.first() is None:
        await lock_conn.execute(CreateSchema(schema))
    await lock_conn.commit()
    # A brand-new connection that has executed nothing: Alembic owns (and commits) one
    # transaction per revision.
    async with engine.connect() as mig_conn:
        applied: list[str] = await mig_conn.run_sync(_upgrade, schema)
    current = await lock_conn.run_sync(_current, schema)
    await lock_conn.commit()
    if current != heads:
        raise RuntimeError(
            f"dashboard schema {schema!r} upgrade did not commit: version table "
            f"reads {current}, expected {heads}"
        )
    return applied
