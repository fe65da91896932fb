"""Helpers for the approval and audit tests: a dashboard in proxy mode with a cast of
people, requests made as any of them through the real HTTP stack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.peer import PeerAddress, csrf_token
from tests.runs_support import DEMO

# viewer < operator < approver < admin
ROLES = "vic=viewer,carol=operator,olga=operator,bob=approver,dave=approver,ada=admin,*=viewer"
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted", "rejected", "expired"}


def proxy_settings(url: str, scripts: Path = DEMO, **extra: str) -> Settings:
    env = {
        "DASHBOARD_DATABASE_URL": url,
        "DASHBOARD_AUTH_MODE": "proxy",
        "DASHBOARD_ROLES": ROLES,
        "DASHBOARD_SECRET_KEY": "s" * 32,
        "DASHBOARD_SCRIPT_LOCATION": str(scripts),
    }
    env.update(extra)
    return Settings.from_env(env)


class Api:
    """Requests as a named person (X-Forwarded-User from a trusted proxy address)."""

    def __init__(
        self, app: Litestar, peer: PeerAddress, client: AsyncTestClient[Any], token: str
    ) -> None:
        self.app = app
        self.peer = peer  # set peer.address to come from elsewhere
        self.client = client
        self.token = token

    @property
    def dash(self) -> Any:
        return self.app.state.dashboard

    def headers(self, user: str | None, csrf: bool = True, **extra: str) -> dict[str, str]:
        h = dict(extra)
        if user is not None:
            h["x-forwarded-user"] = user
        if csrf:
            h["x-csrftoken"] = self.token
        return h

    async def get(self, user: str | None, path: str, **params: Any) -> Response:
        return await self.client.get(path, params=params or None, headers=self.headers(user))

    async def post(
        self, user: str | None, path: str, body: Any = None, *, csrf: bool = True, **kw: Any
    ) -> Response:
        headers = self.headers(user, csrf, **kw.pop("headers", {}))
        if body is None and "content" not in kw and "data" not in kw:
            return await self.client.post(path, headers=headers, **kw)
        if body is not None:
            kw["json"] = body
        return await self.client.post(path, headers=headers, **kw)

    async def request_run(
        self,
        user: str,
        current: list[str],
        target: str = "+1",
        direction: str = "upgrade",
        *,
        acknowledge: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Request a run; `acknowledge` (e.g. ACK_BACKFILL) is sent only when given."""
        payload: dict[str, Any] = {
            "direction": direction,
            "target": target,
            "expected_current": current,
        }
        if acknowledge is not None:
            payload["acknowledge"] = acknowledge
        r = await self.post(user, "/api/runs", payload)
        assert r.status_code == 202, r.text
        body: dict[str, Any] = r.json()
        return body

    async def approve(
        self, user: str, run_id: int, *, acknowledge: list[dict[str, str]] | None = None
    ) -> Response:
        """POST /api/runs/{id}/approve as `user`, with `acknowledge` (e.g. ACK_BACKFILL)
        when the plan has a data-dependent revision; no body otherwise."""
        body = None if acknowledge is None else {"acknowledge": acknowledge}
        return await self.post(user, f"/api/runs/{run_id}/approve", body)

    async def run(self, run_id: int, user: str = "vic") -> dict[str, Any]:
        r = await self.get(user, f"/api/runs/{run_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def finished(self, run_id: int, within_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            run = await self.run(run_id)
            if run["status"] in TERMINAL:
                return run
            await asyncio.sleep(0.05)
        raise AssertionError(f"run {run_id} did not finish")

    async def audit(self, **filters: Any) -> list[dict[str, Any]]:
        r = await self.get("vic", "/api/audit", **filters)
        assert r.status_code == 200, r.text
        entries: list[dict[str, Any]] = r.json()["entries"]
        return entries

    async def audit_count(self) -> int:
        return len(await self.audit(limit=10000))


@asynccontextmanager
async def dashboard(
    url: str, scripts: Path = DEMO, *, address: str = "127.0.0.1", **env: str
) -> AsyncIterator[Api]:
    app = create_app(proxy_settings(url, scripts, **env))
    peer = PeerAddress(app, address)
    async with AsyncTestClient(peer) as client:  # type: ignore[arg-type]
        token = await csrf_token(client)
        yield Api(app, peer, client, token)


async def version(plain_url: str) -> list[str]:
    conn = await asyncpg.connect(plain_url)
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version ORDER BY 1")
        return [r[0] for r in rows]
    finally:
        await conn.close()
