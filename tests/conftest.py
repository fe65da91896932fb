"""Real PostgreSQL for every test.

`DASHBOARD_TEST_DATABASE_URL` (a server-level URL; its database part is ignored) when set,
otherwise an embedded server from the `pgserver` package under `.pytest-pg/`. Every test
that asks for `db_url` gets a brand-new database, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def _server_url() -> Iterator[str]:
    env = os.environ.get("DASHBOARD_TEST_DATABASE_URL")
    if env:
        yield env
        return
    import pgserver

    datadir = ROOT / ".pytest-pg"
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """libpq-style URL of the test server (postgresql://...)."""
    yield from _server_url()


def _plain(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def _async(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def create_database(server_url: str) -> str:
    """Create an empty database with a fresh name on the server; return its name."""
    name = "t_" + uuid.uuid4().hex[:16]
    conn = await asyncpg.connect(_plain(server_url, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_plain(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db_name(pg_server_url: str) -> AsyncIterator[str]:
    """Name of a fresh, empty database for this test (dropped, with FORCE, afterwards)."""
    name = await create_database(pg_server_url)
    try:
        yield name
    finally:
        await drop_database(pg_server_url, name)


@pytest.fixture
def db_url(pg_server_url: str, db_name: str) -> str:
    """postgresql+asyncpg:// URL of a fresh, empty database for this test."""
    return _async(_plain(pg_server_url, db_name))


@pytest.fixture
def plain_db_url(pg_server_url: str, db_name: str) -> str:
    """postgresql:// URL (for asyncpg.connect / psycopg-style tools) of the same database."""
    return _plain(pg_server_url, db_name)


@pytest.fixture
def demo_scripts(tmp_path: Path) -> Path:
    """A private copy of the project's demo alembic/ folder (tests may add revisions)."""
    dest = tmp_path / "alembic"
    shutil.copytree(ROOT / "alembic", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
