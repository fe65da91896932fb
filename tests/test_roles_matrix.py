"""Role x action matrix over the HTTP API on real PostgreSQL.

viewer: read everything; operator: request runs, cancel runs and backends; approver:
approve or reject others' requests; admin: terminate backends and everything else.
Every allowed cell really does the thing; every denied cell answers 403 (401 without an
identity), leaves an audit row, and changes nothing. A structural test checks that every
unsafe route of the app carries the role guard this matrix expects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from dashboard.app import create_app
from tests.approval_support import Api, dashboard, proxy_settings
from tests.migrate import alembic_to
from tests.runs_support import BASE, DEMO
from tests.waiting import wait_until_async

USERS = {"viewer": "vic", "operator": "olga", "approver": "dave", "admin": "ada"}
ROLES = list(USERS)

# (method, path) of every unsafe route -> the least role its guard requires
# (None: public; login has its own checks and rate limit).
EXPECTED_GUARDS = {
    ("POST", "/api/runs"): "operator",
    ("POST", "/runs"): "operator",
    ("POST", "/api/runs/{run_id:int}/cancel"): "operator",
    ("POST", "/api/runs/{run_id:int}/approve"): "approver",
    ("POST", "/runs/{run_id:int}/approve"): "approver",
    ("POST", "/api/runs/{run_id:int}/reject"): "approver",
    ("POST", "/runs/{run_id:int}/reject"): "approver",
    ("POST", "/api/runs/{run_id:int}/execute"): "operator",
    ("POST", "/runs/{run_id:int}/execute"): "operator",
    ("POST", "/api/backends/{pid:str}/cancel"): "operator",
    ("POST", "/api/backends/{pid:str}/terminate"): "admin",
    ("POST", "/login"): None,
    ("POST", "/logout"): None,
}

READ_PATHS = [
    "/",
    "/migrations",
    "/locks",
    "/activity",
    "/pool",
    "/runs",
    "/audit",
    "/api/migrations",
    "/api/locks",
    "/api/activity",
    "/api/pool",
    "/api/runs",
    "/api/audit",
    "/audit.csv",
]


def test_every_unsafe_route_carries_the_expected_guard(tmp_path: Any) -> None:
    app = create_app(proxy_settings("postgresql://u@127.0.0.1:1/none"))
    found: dict[tuple[str, str], str | None] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            methods = set(getattr(handler, "http_methods", ())) - {"GET", "HEAD", "OPTIONS"}
            for method in methods:
                names = [
                    getattr(getattr(g, "func", g), "__name__", "") for g in handler.resolve_guards()
                ]
                roles = [
                    n.rsplit("requires_", 1)[1]
                    for n in names
                    if "requires_" in n and n.rsplit("requires_", 1)[1] in USERS
                ]
                assert "authenticated" in names, (method, route.path)
                found[(method, route.path)] = roles[0] if roles else None
    assert found == EXPECTED_GUARDS


async def sleeper(url: str) -> tuple[asyncpg.Connection, int, str, asyncio.Task[Any]]:
    """A real client backend busy in a query, to cancel or terminate."""
    conn = await asyncpg.connect(url)
    pid, started = await conn.fetchrow(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    )
    task = asyncio.ensure_future(conn.execute("SELECT pg_sleep(60)"))

    async def busy() -> bool:
        return await alive(url, int(pid)) == "active"

    await wait_until_async(busy, timeout_s=10, what=f"backend {pid} to be running pg_sleep")
    return conn, int(pid), started.isoformat(), task


@asynccontextmanager
async def sleepers(url: str, n: int) -> AsyncIterator[list[tuple[int, str, asyncio.Task[Any]]]]:
    made = [await sleeper(url) for _ in range(n)]
    try:
        yield [(pid, started, task) for _, pid, started, task in made]
    finally:
        for conn, _, _, task in made:
            task.cancel()
            conn.terminate()


async def alive(plain_url: str, pid: int) -> str | None:
    conn = await asyncpg.connect(plain_url)
    try:
        state: str | None = await conn.fetchval(
            "SELECT state FROM pg_stat_activity WHERE pid = $1", pid
        )
        return state
    finally:
        await conn.close()


class Matrix:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.denied = 0

    async def call(
        self, role: str | None, path: str, body: Any = None, *, allowed: bool, ok: int = 200
    ) -> Any:
        user = USERS[role] if role else None
        before = await self.api.audit_count()
        r = await self.api.post(user, path, body)
        if allowed:
            assert r.status_code == ok, (role, path, r.status_code, r.text)
            return r.json()
        expected = 401 if role is None else 403
        assert r.status_code == expected, (role, path, r.status_code, r.text)
        if role is not None:
            assert "needs" in r.json()["error"], r.text
        self.denied += 1
        rows = await self.api.audit(limit=1)
        assert await self.api.audit_count() == before + 1
        assert rows[0]["outcome"] == "denied" and rows[0]["actor"] == (user or "anonymous")
        return r.json()


async def test_role_action_matrix(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        m = Matrix(api)
        can = {
            "request": {"operator", "approver", "admin"},
            "cancel_run": {"operator", "approver", "admin"},
            "approve": {"approver", "admin"},
            "reject": {"approver", "admin"},
            "execute": {"operator", "approver", "admin"},
            "cancel_backend": {"operator", "approver", "admin"},
            "terminate_backend": {"admin"},
        }

        current = [BASE]  # where the database is (moved by each executed run)

        async def pending(by: str = "carol") -> int:
            return int((await api.request_run(by, current))["id"])

        # reading: everyone with an identity, nobody without
        run_id = await pending()
        for path in [*READ_PATHS, f"/runs/{run_id}", f"/api/runs/{run_id}"]:
            for role in ROLES:
                r = await api.get(USERS[role], path)
                assert r.status_code == 200, (role, path, r.status_code)
            assert (await api.get(None, path)).status_code == 401, path

        # anonymous: 401 on every action, recorded
        for path in ("/api/runs", f"/api/runs/{run_id}/approve", f"/api/runs/{run_id}/execute"):
            await m.call(None, path, {}, allowed=False)

        # request a run
        body = {"direction": "upgrade", "target": "+1", "expected_current": [BASE]}
        for role in ROLES:
            res = await m.call(role, "/api/runs", body, allowed=role in can["request"], ok=202)
            if role in can["request"]:
                assert res["status"] == "awaiting_approval"

        # approve / reject / cancel someone else's (carol's) pending request
        for action, ok in (("approve", 200), ("reject", 200), ("cancel", 202)):
            key = "cancel_run" if action == "cancel" else action
            for role in ROLES:
                target = await pending()
                before = await api.run(target)
                payload = {"reason": "not now"} if action == "reject" else None
                res = await m.call(
                    role,
                    f"/api/runs/{target}/{action}",
                    payload,
                    allowed=role in can[key],
                    ok=ok,
                )
                after = await api.run(target)
                if role in can[key]:
                    expect = {"approve": "awaiting_approval", "reject": "rejected"}.get(
                        action, "cancelled"
                    )
                    assert after["status"] == expect, (role, action, after)
                    if action == "approve":
                        assert after["approved_by"] == USERS[role]
                else:
                    assert after == before, (role, action)
                    assert res["status_code"] == 403

        # execute an approved request: each role its own request, approved by bob
        for role in ROLES:
            user = USERS[role]
            target = await pending(user if role in can["request"] else "carol")
            assert (await api.post("bob", f"/api/runs/{target}/approve")).status_code == 200
            res = await m.call(
                role, f"/api/runs/{target}/execute", allowed=role in can["execute"], ok=202
            )
            if role in can["execute"]:
                done = await api.finished(res["id"])
                assert done["status"] == "succeeded", done["error"]
                current = done["verified_revs"]
            else:
                assert (await api.run(target))["status"] == "awaiting_approval"
                await api.post("carol", f"/api/runs/{target}/cancel")

        # backends: cancel (operator+) and terminate (admin) real sessions
        async with sleepers(plain_db_url, 4) as backends:
            for role, (pid, started, task) in zip(ROLES, backends, strict=True):
                allowed = role in can["cancel_backend"]
                res = await m.call(
                    role,
                    f"/api/backends/{pid}/cancel",
                    {"backend_start": started},
                    allowed=allowed,
                )
                if allowed:
                    assert res["outcome"] == "cancel_sent"
                    await asyncio.wait([task], timeout=5)
                    assert task.done() and isinstance(task.exception(), asyncpg.QueryCanceledError)
                else:
                    assert await alive(plain_db_url, pid) == "active" and not task.done()
        async with sleepers(plain_db_url, 1) as [(pid, started, task)]:
            for role in ROLES:
                allowed = role in can["terminate_backend"]
                res = await m.call(
                    role,
                    f"/api/backends/{pid}/terminate",
                    {"backend_start": started},
                    allowed=allowed,
                )
                if allowed:
                    assert res["outcome"] in ("terminated", "terminate_sent")
                else:
                    assert await alive(plain_db_url, pid) == "active"
            await asyncio.wait([task], timeout=5)
            assert task.done()

        # every refusal above is in the audit log, and the successes too
        denied = await api.audit(outcome="denied", limit=1000)
        assert len(denied) == m.denied
        signals = await api.audit(action="backend.*", limit=1000)
        ok_signals = [e for e in signals if e["outcome"] in ("cancel_sent", "terminated")]
        assert {(e["actor"], e["action"]) for e in ok_signals} == {
            ("olga", "backend.cancel"),
            ("dave", "backend.cancel"),
            ("ada", "backend.cancel"),
            ("ada", "backend.terminate"),
        }
        assert all(e["target"].startswith("backend pid ") for e in signals)
