"""The lock tree seen by a least-privilege role (no superuser, no pg_read_all_stats).

Such a role sees other users' sessions in pg_stat_activity with NULL state, query,
wait_event_type, backend_start; but pg_locks (ungranted rows included) and
pg_blocking_pids() stay visible, so the tree must still be complete (issue 11, item 8).
The pile-up is built as the superuser; the dashboard's diagnostics connect as the role.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from markupsafe import escape
from sqlalchemy.engine import make_url

from dashboard.server.model import (
    HIDDEN_QUERY_NOTE,
    INSUFFICIENT_PRIVILEGE,
    Privileges,
    build_settings,
)
from dashboard.server.snapshot import build_snapshot
from tests.lock_chain import Pile, app_for, find, pids, refresh


@pytest.fixture
async def least_role(pg_server_url: str) -> AsyncIterator[str]:
    """A LOGIN role that is neither superuser nor a member of pg_read_all_stats /
    pg_monitor (requested before db_name, so it is dropped after the test database)."""
    admin = await asyncpg.connect(pg_server_url)
    name = "t_least_" + uuid.uuid4().hex[:8]
    await admin.execute(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER')
    try:
        yield name
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def role_app(role: str, db_name: str, db_url: str, plain_db_url: str) -> Any:
    """The app with its diagnostics (and state store) connecting as `role`, which gets
    CONNECT and CREATE (for the dashboard's own schema) on the test database only."""
    admin = await asyncpg.connect(plain_db_url)
    try:
        await admin.execute(f'GRANT CONNECT, CREATE ON DATABASE "{db_name}" TO "{role}"')
    finally:
        await admin.close()
    role_plain = make_url(plain_db_url).set(username=role).render_as_string(hide_password=False)
    try:  # only the login itself depends on the server's pg_hba; nothing else may skip
        probe = await asyncpg.connect(role_plain)
    except (OSError, asyncpg.PostgresError) as exc:  # pragma: no cover
        msg = f"cannot log in as a fresh role on this server: {exc}"
        if os.environ.get("CI"):
            pytest.fail(msg + " -- may not be skipped in CI")
        pytest.skip(msg)
    try:
        assert not await probe.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role)
        for member_of in ("pg_read_all_stats", "pg_monitor"):
            assert not await probe.fetchval(
                "SELECT pg_has_role(current_user, $1, 'MEMBER')", member_of
            ), member_of
    finally:
        await probe.close()
    url = make_url(db_url).set(username=role).render_as_string(hide_password=False)
    return app_for(url)


async def api_locks(client: Any) -> dict[str, Any]:
    await refresh(client)
    r = await client.get("/api/locks")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_hidden(node: dict[str, Any]) -> None:
    assert node["known"] is True
    assert node["query_visible"] is False
    assert node["query"] is None
    assert node["query_note"] == HIDDEN_QUERY_NOTE
    assert node["signalable"] is False  # backend_start is hidden: no safe identity check


@pytest.mark.parametrize("kind", ["table_lock", "row_lock"])
async def test_least_privilege_role_sees_the_whole_pile_up(
    kind: str, least_role: str, db_name: str, db_url: str, plain_db_url: str
) -> None:
    app = await role_app(least_role, db_name, db_url, plain_db_url)
    async with Pile(plain_db_url) as pile, AsyncTestClient(app) as client:
        await pile.sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
        await pile.sql("INSERT INTO accounts VALUES (1, 100)")
        holder = await pile.session("app-holder")
        if kind == "table_lock":
            await holder.execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
            wait_sql = "SELECT count(*) FROM accounts"
        else:
            await holder.execute("BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = 1")
            wait_sql = "UPDATE accounts SET balance = balance - 1 WHERE id = 1"
        waiters = []
        for i in range(3):
            w = await pile.session(f"app-waiter-{i}")
            await pile.block(w, wait_sql)
            waiters.append(w.get_server_pid())
        ph = holder.get_server_pid()

        body = await api_locks(client)
        assert body["privileges"]["role"] == least_role
        assert body["privileges"]["sees_all_queries"] is False
        assert body["blocked_count"] == 3
        assert pids(body["roots"]) == [ph]
        root = body["roots"][0]
        assert root["blast_radius"] == 3
        assert root["application_name"] == "app-holder"  # still visible without the privilege
        assert root["backend_start"] is None  # hidden on PostgreSQL 15 without the privilege
        assert root["state"] is None
        assert_hidden(root)
        assert root["blocking_on"]  # what the waiters want, from pg_locks
        assert sorted(pids(body["waiters"])) == sorted(waiters)
        for w in body["waiters"]:
            assert_hidden(w)
            assert w["mode"] is not None and w["wait_age_s"] is not None
            assert w["wait_age_approx"] is False  # pg_locks.waitstart is visible too
        if kind == "table_lock":
            assert sorted(pids(root["blocked"])) == sorted(waiters)
            assert all(n["relation"] == "public.accounts" for n in root["blocked"])
        nw = find(body["waiters"], waiters[0])
        assert nw["blocked_by"] == [ph]

        vis = body["visibility"]
        assert vis["all_stats"] is False and vis["role"] == least_role
        assert "pg_read_all_stats" in vis["reason"]
        assert vis["grant"] == f'GRANT pg_read_all_stats TO "{least_role}";'
        assert vis["hidden_sessions"] >= 4

        snap = client.app.state.dashboard.sampler.latest
        assert snap.blast_radius[ph] == 3

        page = await client.get("/locks")
        assert page.status_code == 200
        html = page.text
        assert f'data-root-pid="{ph}"' in html
        assert 'data-blast-radius="3"' in html
        assert 'data-blocked-count="3"' in html
        assert str(escape(HIDDEN_QUERY_NOTE)) in html
        assert "&lt;insufficient privilege&gt;" not in html
        assert html.count("GRANT pg_read_all_stats TO") == 1  # said once, not per row


# --- pure: the snapshot of a hidden pile-up, no database ---------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def hidden_row(pid: int, blocked_by: list[int] | None = None) -> dict[str, Any]:
    """A pg_stat_activity row as a role without pg_read_all_stats sees another user's
    session (PostgreSQL 15), with what pg_locks still tells about its wait."""
    waits = bool(blocked_by)
    return {
        "pid": pid,
        "backend_start": None,
        "usename": "app",
        "application_name": f"app-{pid}",
        "client_addr": None,
        "state": None,
        "wait_event_type": None,
        "wait_event": None,
        "xact_start": None,
        "query_start": None,
        "state_change": None,
        "query": INSUFFICIENT_PRIVILEGE,
        "backend_type": None,
        "datname": "prod",
        "blocked_by": blocked_by,
        "wait_locktype": "relation" if waits else None,
        "wait_mode": "AccessShareLock" if waits else None,
        "wait_start": NOW - timedelta(seconds=7) if waits else None,
        "wait_xid": None,
        "wait_vxid": None,
        "wait_objid": None,
        "wait_relid": 16384 if waits else None,
        "wait_relation": "public.t" if waits else None,
        "server_now": NOW,
    }


def snapshot_of(rows: list[dict[str, Any]], privileges: Privileges) -> Any:
    settings = build_settings(
        [{"name": "server_version_num", "setting": "150004", "unit": None, "source": "default"}],
        [],
        None,
        read_at=0,
    )
    return build_snapshot(rows, settings, privileges, taken_at=0, duration_ms=1, long_query_s=30)


def test_hidden_sessions_keep_the_tree_and_say_why_the_query_is_missing() -> None:
    rows = [hidden_row(1), hidden_row(2, [1]), hidden_row(3, [1]), hidden_row(4, [1])]
    snap = snapshot_of(rows, Privileges(role='dash "ro"', database="prod"))
    body = snap.locks_json()
    assert body["blocked_count"] == 3
    root = body["roots"][0]
    assert root["pid"] == 1 and root["blast_radius"] == 3
    for node in [root, *root["blocked"], *body["waiters"]]:
        assert node["query"] is None and node["query_visible"] is False
        assert node["query_note"] == HIDDEN_QUERY_NOTE
        assert node["backend_start"] is None and node["signalable"] is False
    assert [n["wait_age_s"] for n in root["blocked"]] == [7.0, 7.0, 7.0]
    vis = body["visibility"]
    assert vis["all_stats"] is False and vis["hidden_sessions"] == 4
    assert vis["grant"] == 'GRANT pg_read_all_stats TO "dash ""ro""";'  # quoted identifier


def test_a_privileged_role_gets_no_visibility_warning() -> None:
    rows = [hidden_row(1), hidden_row(2, [1])]
    rows[0].update(query="SELECT 1", state="idle in transaction")
    snap = snapshot_of(rows, Privileges(role="postgres", is_superuser=True))
    body = snap.locks_json()
    assert body["visibility"] == {
        "all_stats": True,
        "role": "postgres",
        "reason": None,
        "grant": None,
        "hidden_sessions": 1,
    }
    root = body["roots"][0]
    assert root["query"] == "SELECT 1" and root["query_visible"] is True
    assert root["query_note"] is None
