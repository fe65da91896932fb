"""Activity (connection budget) over a real server; escaping of attacker-controlled text;
what the page says when the dashboard's role may not see other sessions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import make_url

from tests.lock_chain import Pile, app_for, find, refresh
from tests.waiting import wait_until_async

SCRIPT_Q = "<script>alert('query')</script>"
SCRIPT_APP = "<script>alert('app')</script>"
IMG_USER = "<img src=x onerror=alert(1)>"


async def test_activity_budget_and_sections(db_url: str, plain_db_url: str) -> None:
    app = app_for(db_url, DASHBOARD_LONG_QUERY_S="0.2")
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        idle = [await pile.session("billing-api") for _ in range(3)]
        tx = await pile.session("report-job")
        await tx.execute("BEGIN; SELECT 1")
        sleeper = await pile.session("slow-report")
        pile.start(sleeper, "SELECT pg_sleep(30)")

        async def listed() -> dict[str, Any] | None:
            """the pg_sleep session listed among long-running queries"""
            await refresh(client)
            r = await client.get("/api/activity")
            assert r.status_code == 200
            b: dict[str, Any] = r.json()
            pid = sleeper.get_server_pid()
            return b if any(s["pid"] == pid for s in b["long_running"]) else None

        body = await wait_until_async(listed, timeout_s=10)
        for key in ("max_connections", "total", "by_state", "timeouts", "idle_in_transaction"):
            assert key in body
        assert body["max_connections"] >= body["usable_connections"] > 0
        assert body["total"] >= 5 + 1  # ours + at least the sampler's own connection
        assert body["by_state"].get("idle", 0) >= 3
        assert body["by_state"].get("idle in transaction", 0) >= 1
        assert sum(body["by_state"].values()) == body["total"]
        apps = {a["name"]: a["count"] for a in body["by_application"]}
        assert apps["billing-api"] == 3 and apps["report-job"] == 1
        assert find(body["idle_in_transaction"], tx.get_server_pid())["application_name"] == (
            "report-job"
        )
        slow = find(body["long_running"], sleeper.get_server_pid())
        assert slow["query_age_s"] >= 0.2 and "pg_sleep" in slow["query"]
        assert set(body["timeouts"]) >= {
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
            "idle_session_timeout",
        }
        # The server default is 0 on this machine: the page must warn about it.
        if body["timeouts"]["idle_in_transaction_session_timeout"]["unbounded"]:
            assert "idle_in_transaction_unbounded" in {w["code"] for w in body["warnings"]}
        assert len(idle) == 3

        page = await client.get("/activity")
        assert page.status_code == 200
        html = page.text
        assert 'id="budget"' in html and f'data-total="{body["total"]}"' in html
        assert 'data-setting="idle_in_transaction_session_timeout"' in html
        assert f'data-pid="{tx.get_server_pid()}"' in html
        assert 'hx-trigger="every 60s' in html and "data-poll" in html
        frag = await client.get("/activity", headers={"HX-Request": "true"})
        assert "<html" not in frag.text and 'id="budget"' in frag.text

        home = await client.get("/")
        assert 'id="locks-card"' in home.text


@pytest.fixture
async def evil_role(pg_server_url: str) -> AsyncIterator[str]:
    """A role whose name is HTML. Request it before db_url: it is dropped after the
    test database (and everything in it that depends on the role) is gone."""
    admin = await asyncpg.connect(pg_server_url)
    name = IMG_USER + uuid.uuid4().hex[:6]
    await admin.execute(f'CREATE ROLE "{name}" LOGIN')
    try:
        yield name
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def test_html_in_query_app_name_and_user_renders_as_text(
    evil_role: str, db_url: str, plain_db_url: str
) -> None:
    app = app_for(db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        await pile.sql("CREATE TABLE victims (id int)")
        await pile.sql(f'GRANT ALL ON victims TO "{evil_role}"')
        dsn = make_url(plain_db_url).set(username=evil_role).render_as_string(hide_password=False)
        holder = await asyncpg.connect(dsn, server_settings={"application_name": SCRIPT_APP})
        pile.conns.append(holder)
        await holder.execute("BEGIN; LOCK TABLE victims IN ACCESS EXCLUSIVE MODE")
        waiter = await pile.session(SCRIPT_APP)
        await pile.block(waiter, f"SELECT $q${SCRIPT_Q}$q$::text FROM victims")
        await refresh(client)

        body = (await client.get("/api/locks")).json()
        root = find(body["roots"], holder.get_server_pid())
        assert root["application_name"] == SCRIPT_APP and root["user"] == evil_role
        assert SCRIPT_Q in root["blocked"][0]["query"]  # JSON carries the text as is

        for path in ("/locks", "/activity", "/"):
            html = (await client.get(path)).text
            assert "<script>alert" not in html, path
            assert "<img src=x" not in html, path
        locks_html = (await client.get("/locks")).text
        assert "&lt;script&gt;alert(&#39;query&#39;)&lt;/script&gt;" in locks_html
        assert "&lt;script&gt;alert(&#39;app&#39;)&lt;/script&gt;" in locks_html
        assert "&lt;img src=x onerror=alert(1)&gt;" in locks_html


@pytest.fixture
async def plain_role(pg_server_url: str) -> AsyncIterator[str]:
    """A role without superuser or pg_read_all_stats (requested before db_url, so it is
    dropped after the test database)."""
    admin = await asyncpg.connect(pg_server_url)
    name = "t_noprivs_" + uuid.uuid4().hex[:8]
    await admin.execute(f'CREATE ROLE "{name}" LOGIN')
    try:
        yield name
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def test_missing_privileges_are_said_not_hidden(
    plain_role: str, db_name: str, db_url: str, plain_db_url: str
) -> None:
    url = make_url(db_url).set(username=plain_role).render_as_string(hide_password=False)
    app = app_for(url)
    async with Pile(plain_db_url) as pile:
        await pile.sql(f'GRANT CREATE ON DATABASE "{db_name}" TO "{plain_role}"')
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        other = await pile.session("someone-else")
        await other.execute("BEGIN; SELECT 1")
        snap = await refresh(client)
        assert snap.privileges.sees_all_queries is False
        hidden = snap.sessions[other.get_server_pid()]
        assert hidden.hidden and hidden.backend_start is None

        body = (await client.get("/api/activity")).json()
        assert body["hidden_sessions"] >= 1
        assert "insufficient_privilege" in {w["code"] for w in body["warnings"]}
        html = (await client.get("/activity")).text
        assert "pg_read_all_stats" in html and "cannot see" in html
        locks = (await client.get("/locks")).text
        assert "pg_read_all_stats" in locks
