"""Test helper: move a database with Alembic's own command API (through the demo env.py,
which honours config.attributes["connection"])."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def _run(conn: Connection, scripts: Path, revision: str, down: bool) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts))
    cfg.attributes["connection"] = conn
    if down:
        command.downgrade(cfg, revision)
    else:
        command.upgrade(cfg, revision)


async def alembic_to(db_url: str, scripts: Path, revision: str, *, down: bool = False) -> None:
    engine = create_async_engine(db_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run, scripts, revision, down)
            await conn.commit()
    finally:
        await engine.dispose()
