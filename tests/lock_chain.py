"""Real lock pile-ups for tests: separate asyncpg connections that hold and wait."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from dashboard.app import create_app
from dashboard.settings import Settings


def app_for(url: str, **env: str) -> Any:
    base = {
        "DASHBOARD_DATABASE_URL": url,
        "DASHBOARD_AUTH_MODE": "none",
        # The tests drive the sampler with refresh(); keep the background loop quiet.
        "DASHBOARD_SAMPLE_INTERVAL_S": "60",
    }
    base.update(env)
    return create_app(Settings.from_env(base))


class Pile:
    """Opens sessions, starts statements that block, and cleans everything up."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[asyncpg.Connection] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.admin: asyncpg.Connection | None = None

    async def __aenter__(self) -> Pile:
        self.admin = await asyncpg.connect(
            self.dsn, server_settings={"application_name": "t-admin"}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.terminate()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.admin is not None:
            await self.admin.close()

    async def session(self, app: str = "t-session", **settings: str) -> asyncpg.Connection:
        ss: dict[str, str] = {"application_name": app}
        ss.update(settings)
        c = await asyncpg.connect(self.dsn, server_settings=ss)
        self.conns.append(c)
        return c

    async def sql(self, sql: str) -> None:
        assert self.admin is not None
        await self.admin.execute(sql)

    def start(self, conn: asyncpg.Connection, sql: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(conn.execute(sql))
        self.tasks.append(task)
        return task

    async def wait_for_lock(self, conn: asyncpg.Connection, timeout_s: float = 10.0) -> None:
        """Until the session behind `conn` is waiting on a heavyweight lock."""
        assert self.admin is not None
        pid = conn.get_server_pid()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = await self.admin.fetchrow(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
            )
            if row is not None and row["wait_event_type"] == "Lock":
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"pid {pid} never started waiting on a lock")

    async def block(self, conn: asyncpg.Connection, sql: str) -> asyncio.Task[Any]:
        task = self.start(conn, sql)
        await self.wait_for_lock(conn)
        return task

    async def alive(self, pid: int) -> bool:
        assert self.admin is not None
        return bool(
            await self.admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        )


async def refresh(client: Any, app: Any = None) -> Any:
    """One sampler cycle now, on the app's own event loop (AsyncTestClient serves the app
    from a portal thread; asyncpg connections belong to the loop that opened them)."""
    sampler = (app or client.app).state.dashboard.sampler
    return await asyncio.to_thread(client.blocking_portal.call, sampler.refresh)


def find(nodes: list[Mapping[str, Any]], pid: int) -> Mapping[str, Any]:
    for n in nodes:
        if n["pid"] == pid:
            return n
    raise AssertionError(f"pid {pid} not among {[n['pid'] for n in nodes]}")


def pids(nodes: list[Mapping[str, Any]]) -> list[int]:
    return [n["pid"] for n in nodes]


async def csrf_headers(client: Any) -> dict[str, str]:
    """GET a page so the CSRF cookie is set; return the header unsafe requests need."""
    if not client.cookies.get("csrftoken"):
        await client.get("/healthz")
    if not client.cookies.get("csrftoken"):
        await client.get("/locks")
    token = client.cookies.get("csrftoken")
    assert token, "no csrftoken cookie"
    return {"x-csrftoken": token}
