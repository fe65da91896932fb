"""Cancel and terminate against real backends: effects, refusals, bad input, roles."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.lock_chain import Pile, app_for, csrf_headers, find, refresh
from tests.peer import client_from

PROXY = {
    "DASHBOARD_AUTH_MODE": "proxy",
    "DASHBOARD_ROLES": "alice=admin,carol=operator,*=viewer",
}


async def root_and_waiter(pile: Pile) -> tuple[asyncpg.Connection, asyncpg.Connection, Any]:
    await pile.sql("CREATE TABLE IF NOT EXISTS jobs (id int PRIMARY KEY, state text)")
    await pile.sql("INSERT INTO jobs VALUES (1, 'new') ON CONFLICT DO NOTHING")
    holder = await pile.session("stuck-worker")
    await holder.execute("BEGIN; UPDATE jobs SET state = 'taken' WHERE id = 1")
    waiter = await pile.session("queue-worker")
    task = await pile.block(waiter, "UPDATE jobs SET state = 'again' WHERE id = 1")
    return holder, waiter, task


async def post(
    client: Any, pid: Any, action: str, body: Any = None, user: str | None = None, **kw: Any
) -> Any:
    headers = await csrf_headers(client)
    if user:
        headers["X-Forwarded-User"] = user
    headers.update(kw.pop("headers", {}))
    if body is None:
        return await client.post(f"/api/backends/{pid}/{action}", headers=headers, **kw)
    return await client.post(f"/api/backends/{pid}/{action}", json=body, headers=headers, **kw)


async def identity(client: Any, pid: int, app: Any = None) -> str:
    snap = await refresh(client, app)
    bs = snap.sessions[pid].backend_start
    assert bs is not None
    return str(bs.isoformat())


async def test_cancel_a_waiting_query(db_url: str, plain_db_url: str) -> None:
    async with Pile(plain_db_url) as pile, AsyncTestClient(app_for(db_url)) as client:
        holder, waiter, task = await root_and_waiter(pile)
        pw = waiter.get_server_pid()
        r = await post(client, pw, "cancel", {"backend_start": await identity(client, pw)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] is True and body["outcome"] == "cancel_sent" and body["effective"]
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(task, 5)
        assert await pile.alive(pw)  # cancel keeps the session
        assert await pile.alive(holder.get_server_pid())


async def test_terminate_the_root_releases_its_waiters(db_url: str, plain_db_url: str) -> None:
    async with Pile(plain_db_url) as pile, AsyncTestClient(app_for(db_url)) as client:
        holder, waiter, task = await root_and_waiter(pile)
        ph = holder.get_server_pid()
        bs = await identity(client, ph)
        body = (await client.get("/api/locks")).json()
        assert find(body["roots"], ph)["blast_radius"] == 1

        # Cancel on an idle-in-transaction root is sent but has nothing to cancel: say so.
        r = await post(client, ph, "cancel", {"backend_start": bs})
        assert r.status_code == 200 and r.json()["effective"] is False
        assert "idle in transaction" in r.json()["message"]

        r = await post(client, ph, "terminate", {"backend_start": bs})
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "terminated"
        assert not await pile.alive(ph)
        await asyncio.wait_for(task, 5)  # the waiter's UPDATE went through
        body = (await client.get("/api/locks")).json()  # refreshed by the action
        assert body["blocked_count"] == 0


async def test_stale_backend_start_is_refused_and_nothing_signalled(
    db_url: str, plain_db_url: str
) -> None:
    async with Pile(plain_db_url) as pile, AsyncTestClient(app_for(db_url)) as client:
        holder, _waiter, task = await root_and_waiter(pile)
        ph = holder.get_server_pid()
        real = await identity(client, ph)
        from datetime import datetime

        stale = (datetime.fromisoformat(real) - timedelta(seconds=5)).isoformat()
        for action in ("cancel", "terminate"):
            r = await post(client, ph, action, {"backend_start": stale})
            assert r.status_code == 409, r.text
            body = r.json()
            assert body["outcome"] == "stale" and body["ok"] is False
            assert "reused" in body["error"] and body["status_code"] == 409
        assert await pile.alive(ph)
        assert not task.done()  # still blocked: nothing was signalled


async def test_bad_input_is_refused_with_a_clear_message(db_url: str, plain_db_url: str) -> None:
    async with Pile(plain_db_url) as pile, AsyncTestClient(app_for(db_url)) as client:
        holder, _waiter, task = await root_and_waiter(pile)
        ph = holder.get_server_pid()
        bs = await identity(client, ph)
        cases: list[tuple[Any, Any, int, str]] = [
            ("abc", {"backend_start": bs}, 400, "positive whole number"),
            ("-5", {"backend_start": bs}, 400, "positive whole number"),
            ("0", {"backend_start": bs}, 400, "out of range"),
            ("99999999999", {"backend_start": bs}, 400, "out of range"),
            (ph, None, 400, "missing body"),
            (ph, {}, 400, "backend_start is required"),
            (ph, {"backend_start": "yesterday"}, 400, "not an ISO 8601"),
            (ph, {"backend_start": 12345}, 400, "ISO 8601"),
            (ph, {"backend_start": "2024-01-01T00:00:00"}, 400, "time zone"),
            (ph, ["not", "an", "object"], 400, "JSON object"),
            (2147483000, {"backend_start": bs}, 404, "no backend with pid"),
        ]
        for pid, body, status, text in cases:
            r = await post(client, pid, "terminate", body)
            assert r.status_code == status, (pid, body, r.text)
            assert text in r.json()["error"], (pid, body, r.json())
        r = await post(
            client,
            ph,
            "terminate",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        assert await pile.alive(ph) and not task.done()


async def test_never_signals_other_databases_server_processes_or_itself(
    db_url: str, plain_db_url: str, pg_server_url: str
) -> None:
    async with Pile(plain_db_url) as pile, AsyncTestClient(app_for(db_url)) as client:
        elsewhere = await asyncpg.connect(pg_server_url, server_settings={"application_name": "x"})
        try:
            snap = await refresh(client)
            other_pid = elsewhere.get_server_pid()
            other = snap.sessions[other_pid]
            assert other.datname != snap.privileges.database
            r = await post(
                client, other_pid, "terminate", {"backend_start": other.backend_start.isoformat()}
            )
            assert r.status_code == 403 and r.json()["outcome"] == "other_database"
            assert not elsewhere.is_closed()
            await elsewhere.fetchval("SELECT 1")

            server_procs = [s for s in snap.sessions.values() if s.backend_type != "client backend"]
            assert server_procs, "expected checkpointer / walwriter / autovacuum launcher"
            for s in server_procs[:3]:
                assert s.backend_start is not None
                r = await post(
                    client, s.pid, "terminate", {"backend_start": s.backend_start.isoformat()}
                )
                assert r.status_code == 403, r.text
                assert r.json()["outcome"] in ("not_client_backend", "other_database")

            own = [
                s
                for s in snap.sessions.values()
                if s.is_dashboard and s.datname == snap.privileges.database
            ]
            assert own, "the sampler's own connection is in the sample"
            r = await post(
                client, own[0].pid, "terminate", {"backend_start": own[0].backend_start.isoformat()}
            )
            assert r.status_code == 403 and r.json()["outcome"] == "dashboard_own"
            assert await pile.alive(own[0].pid)
        finally:
            await elsewhere.close()


async def test_roles_csrf_and_kill_switch(db_url: str, plain_db_url: str) -> None:
    app = app_for(db_url, **PROXY)
    async with Pile(plain_db_url) as pile, client_from(app) as client:
        holder, waiter, task = await root_and_waiter(pile)
        ph, pw = holder.get_server_pid(), waiter.get_server_pid()
        bs_h, bs_w = await identity(client, ph, app), await identity(client, pw, app)

        # No CSRF token: refused before anything else.
        r = await client.post(
            f"/api/backends/{pw}/cancel",
            json={"backend_start": bs_w},
            headers={"X-Forwarded-User": "alice"},
        )
        assert r.status_code == 403
        # No identity, then a viewer: refused.
        assert (await post(client, pw, "cancel", {"backend_start": bs_w})).status_code == 401
        r = await post(client, pw, "cancel", {"backend_start": bs_w}, user="bob")
        assert r.status_code == 403 and "needs operator" in r.json()["error"]
        # An operator may cancel but not terminate.
        r = await post(client, ph, "terminate", {"backend_start": bs_h}, user="carol")
        assert r.status_code == 403 and "needs admin" in r.json()["error"]
        assert await pile.alive(ph)
        r = await post(client, pw, "cancel", {"backend_start": bs_w}, user="carol")
        assert r.status_code == 200
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(task, 5)
        # An admin may terminate.
        r = await post(client, ph, "terminate", {"backend_start": bs_h}, user="alice")
        assert r.status_code == 200 and r.json()["outcome"] == "terminated"

    async with (
        Pile(plain_db_url) as pile,
        AsyncTestClient(app_for(db_url, DASHBOARD_DISABLE_KILL="true")) as client,
    ):
        holder, _waiter, task = await root_and_waiter(pile)
        ph = holder.get_server_pid()
        r = await post(client, ph, "terminate", {"backend_start": await identity(client, ph)})
        assert r.status_code == 403 and r.json()["outcome"] == "disabled"
        assert "DASHBOARD_DISABLE_KILL" in r.json()["error"]
        assert await pile.alive(ph) and not task.done()
        page = await client.get("/locks")
        assert "Terminate…" not in page.text and "DASHBOARD_DISABLE_KILL" in page.text


async def test_page_flow_confirm_fragment_and_form_post(db_url: str, plain_db_url: str) -> None:
    """What the page does: open the confirmation fragment, then post the form (htmx)."""
    async with Pile(plain_db_url) as pile, AsyncTestClient(app_for(db_url)) as client:
        holder, _waiter, task = await root_and_waiter(pile)
        ph = holder.get_server_pid()
        bs = await identity(client, ph)
        page = await client.get("/locks")
        assert f"/backends/{ph}/confirm?action=terminate" in page.text
        frag = await client.get(
            f"/backends/{ph}/confirm",
            params={"action": "terminate", "backend_start": bs},
            headers={"HX-Request": "true"},
        )
        assert frag.status_code == 200
        assert f'data-confirm-value="{ph}"' in frag.text and "stuck-worker" in frag.text
        headers = {**(await csrf_headers(client)), "HX-Request": "true"}
        # A wrong typed confirmation is refused (the button is disabled anyway).
        r = await client.post(
            f"/api/backends/{ph}/terminate",
            data={"backend_start": bs, "confirm": "123"},
            headers=headers,
        )
        assert r.status_code == 200 and 'data-outcome="bad_input"' in r.text
        assert await pile.alive(ph)
        r = await client.post(
            f"/api/backends/{ph}/terminate",
            data={"backend_start": bs, "confirm": str(ph)},
            headers=headers,
        )
        assert r.status_code == 200 and 'data-outcome="terminated"' in r.text
        assert r.headers.get("hx-trigger") == "locks-changed"
        await asyncio.wait_for(task, 5)
        assert not await pile.alive(ph)
