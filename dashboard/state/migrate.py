"""Create or upgrade the dashboard's own schema with its own shipped Alembic migrations.

The same discipline the runner applies to the target's migrations: Alembic is driven
through `EnvironmentContext` (no env.py) inside `AsyncConnection.run_sync`, on a fresh
NullPool connection that has executed nothing, one transaction per revision. Concurrent
start-ups of several dashboard processes are serialized with an advisory lock held on a
second connection.
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
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema

from dashboard.state.model import VERSION_TABLE

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


async def upgrade_state_schema(url: str, schema: str) -> list[str]:
    """Bring `<schema>` to the newest shipped revision; returns the revisions applied."""
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
            await lock_conn.execute(CreateSchema(schema, if_not_exists=True))
            await lock_conn.commit()
            try:
                heads = state_script_directory().get_heads()
                current = await lock_conn.run_sync(_current, schema)
                await lock_conn.commit()
                if sorted(heads) == current:
                    return []
                # A brand-new connection that has executed nothing: Alembic owns (and
                # commits) one transaction per revision.
                async with engine.connect() as mig_conn:
                    applied = await mig_conn.run_sync(_upgrade, schema)
                current = await lock_conn.run_sync(_current, schema)
                await lock_conn.commit()
                if current != sorted(heads):
                    raise RuntimeError(
                        f"dashboard schema {schema!r} upgrade did not commit: version table "
                        f"reads {current}, expected {sorted(heads)}"
                    )
                return applied
            finally:
                await lock_conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": a, "b": b})
                await lock_conn.commit()
    finally:
        await engine.dispose()
