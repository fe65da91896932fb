"""Create the demo `shop` database, migrate it to an early revision and add some rows."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

# The revision the demo starts at: the initial schema, so the branch, the merge, the enum
# change, the concurrent index, the backfill and the irreversible drop are all pending.
DEMO_START_REVISION = "8b2e4d6f1a02"


def _plain(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


async def ensure_database(server_url: str, name: str) -> None:
    """Create database `name` unless it exists (the demo's state: kept across restarts)."""
    conn = await asyncpg.connect(_plain(server_url, "postgres"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def recreate_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_plain(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _upgrade(conn: Connection, script_location: Path, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


async def migrate_to_start(async_url: str, script_location: Path) -> bool:
    """Migrate an uninitialized database to the demo's start revision. False if it was not
    empty (a database the user pointed us at is never rewound)."""
    engine = create_async_engine(async_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(text("SELECT to_regclass('public.alembic_version')"))
        if exists is not None:
            return False
        async with engine.connect() as conn:
            # untouched connection: the demo env.py owns and commits its transactions
            await conn.run_sync(_upgrade, script_location, DEMO_START_REVISION)
            await conn.commit()
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO customers (email, name, legacy_phone) "
                    "SELECT 'customer' || g || '@example.com', 'Customer ' || g, "
                    "'+1-555-' || lpad(g::text, 4, '0') FROM generate_series(1, 2000) g"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO orders (customer_id, status, total_cents) "
                    "SELECT 1 + (g % 2000), (ARRAY['pending','paid','shipped'])[1 + g % 3]"
                    "::order_status, 500 + (g * 37) % 20000 FROM generate_series(1, 6000) g"
                )
            )
        return True
    finally:
        await engine.dispose()
