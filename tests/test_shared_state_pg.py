"""Shared state on real PostgreSQL: the dashboard's schema in a second database
(DASHBOARD_STATE_DATABASE_URL), password-mode logins and the login rate limit honoured by
every process, the session store's expiry, and which database is down when one is."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from dashboard.app import create_app
from dashboard.auth import users
from dashboard.auth.ratelimit import LoginLimiter, LoginRateLimiter, retry_after
from dashboard.auth.ratelimit_store import SharedFailureLog
from dashboard.auth.session_store import PostgresSessionStore, SessionStoreUnavailable
from dashboard.runs.locking import migration_lock_key
from dashboard.settings import Settings, SettingsError
from dashboard.state.admin import upgrade as upgrade_state
from dashboard.state.store import StateStore
from dashboard.targets import Target
from tests.conftest import _async, _plain, create_database, drop_database
from tests.peer import client_from, csrf_token
from tests.runs_support import BASE, DEMO
from tests.tcp_proxy import ThreadedPgProxy
from tests.waiting import wait_until_async

SECRET = "s" * 32
PASSWORD = "a long enough password"


@pytest.fixture
async def state_db_name(pg_server_url: str) -> AsyncIterator[str]:
    """A second fresh database: where the dashboard keeps its own schema."""
    name = await create_database(pg_server_url)
    try:
        yield name
    finally:
        await drop_database(pg_server_url, name)


@pytest.fixture
def state_db_url(pg_server_url: str, state_db_name: str) -> str:
    return _async(_plain(pg_server_url, state_db_name))


def plain(url: str) -> str:
    return _plain(url)


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def schemas(url: str) -> set[str]:
    return {r["nspname"] for r in await fetch(url, "SELECT nspname FROM pg_namespace")}


def closed_port_url(database: str = "nowhere") -> str:
    """A database URL on a local port where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"


# -- the dashboard's schema in another database ---------------------------------------------
async def test_state_in_a_second_database_target_gets_no_dashboard_schema(
    db_url: str, state_db_url: str
) -> None:
    app = create_app(
        Settings.from_env(
            {
                "DASHBOARD_DATABASE_URL": db_url,
                "DASHBOARD_STATE_DATABASE_URL": state_db_url,
                "DASHBOARD_AUTH_MODE": "none",
                "DASHBOARD_REQUIRE_APPROVAL": "false",
                "DASHBOARD_SCRIPT_LOCATION": str(DEMO),
                "DASHBOARD_SAMPLE_INTERVAL_S": "60",
            }
        )
    )
    async with AsyncTestClient(app) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.json()["databases"]["state"] == {"ok": True, "reason": None}
        headers = {"x-csrftoken": await csrf_token(client)}

        # the runs' advisory lock is looked for on the TARGET: held there, a run is refused
        a, b = migration_lock_key(Target.from_settings(app.state.dashboard.settings))
        holder = await asyncpg.connect(plain(db_url))
        try:
            await holder.execute("SELECT pg_advisory_lock($1, $2)", a, b)
            busy = await client.post(
                "/api/runs",
                json={"direction": "upgrade", "target": BASE, "expected_current": []},
                headers=headers,
            )
            assert busy.status_code == 409, busy.text
            assert busy.json()["extra"]["code"] == "busy"
        finally:
            await holder.close()

        r = await client.post(
            "/api/runs",
            json={"direction": "upgrade", "target": BASE, "expected_current": []},
            headers=headers,
        )
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]

        async def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(f"/api/runs/{run_id}")).json()
            return body if body["status"] not in ("queued", "running") else None

        run = await wait_until_async(finished, timeout_s=60, what=f"run {run_id} to finish")
        assert run["status"] == "succeeded", run
        assert run["verified_revs"] == [BASE]

    # the migration went to the target; everything the dashboard keeps, to the state database
    assert [r["version_num"] for r in await fetch(db_url, "SELECT * FROM alembic_version")] == [
        BASE
    ]
    assert "dashboard" not in await schemas(db_url)
    assert "dashboard" in await schemas(state_db_url)
    rows = await fetch(state_db_url, "SELECT id, status FROM dashboard.runs")
    assert [(r["id"], r["status"]) for r in rows] == [(run_id, "succeeded")]
    actions = {r["action"] for r in await fetch(state_db_url, "SELECT action FROM dashboard.audit")}
    assert {"run.request"} <= actions, actions
    assert await fetch(state_db_url, "SELECT 1 FROM dashboard.run_log WHERE run_id = $1", run_id)


async def test_state_upgrade_command_creates_the_schema_in_the_state_database(
    db_url: str, state_db_url: str
) -> None:
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_STATE_DATABASE_URL": state_db_url,
            "DASHBOARD_SCRIPT_LOCATION": str(DEMO),
        }
    )
    applied, role = await upgrade_state(settings)
    assert applied and role is None  # one role: nothing granted
    assert "dashboard" in await schemas(state_db_url)
    assert "dashboard" not in await schemas(db_url)


def test_owner_url_must_name_the_state_database() -> None:
    env = {
        "DASHBOARD_DATABASE_URL": "postgresql://app@db:5432/appdb",
        "DASHBOARD_STATE_DATABASE_URL": "postgresql://app@statedb:5432/dash",
        "DASHBOARD_STATE_OWNER_URL": "postgresql://owner@db:5432/appdb",
    }
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert err.value.variable == "DASHBOARD_STATE_OWNER_URL"
    assert "DASHBOARD_STATE_DATABASE_URL" in err.value.problem and "'dash'" in err.value.problem
    ok = Settings.from_env({**env, "DASHBOARD_STATE_OWNER_URL": "postgresql://owner@statedb/dash"})
    assert ok.state_owner_url is not None and ok.state_database_url is not None
    # without a state database, the owner keeps naming the target's (unchanged)
    single = {k: v for k, v in env.items() if k != "DASHBOARD_STATE_DATABASE_URL"}
    assert Settings.from_env(single).state_database_url is None


# -- which database is down -----------------------------------------------------------------
async def test_state_database_down_is_named_and_live_pages_keep_working(
    pg_server_url: str, db_url: str, state_db_name: str
) -> None:
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    try:
        app = create_app(
            Settings.from_env(
                {
                    "DASHBOARD_DATABASE_URL": db_url,
                    "DASHBOARD_STATE_DATABASE_URL": proxy.url(state_db_name),
                    "DASHBOARD_AUTH_MODE": "none",
                    "DASHBOARD_SCRIPT_LOCATION": str(DEMO),
                    "DASHBOARD_SAMPLE_INTERVAL_S": "0.2",
                }
            )
        )
        async with AsyncTestClient(app) as client:
            assert (await client.get("/readyz")).json()["status"] == "ready"
            proxy.stop()  # the state database goes away, the target stays

            async def degraded() -> dict[str, Any] | None:
                r = await client.get("/readyz")
                body: dict[str, Any] = r.json()
                return body if r.status_code == 200 and body["status"] == "degraded" else None

            body = await wait_until_async(degraded, what="/readyz to report the state database")
            assert body["databases"]["target"] == {"ok": True, "reason": None}
            assert body["databases"]["state"]["ok"] is False
            assert body["reason"].startswith("state database unreachable: ")
            page = await client.get("/locks")
            assert page.status_code == 200
            assert "Database unreachable (state database)" in page.text
            assert "Database unreachable (target database)" not in page.text
            assert (await client.get("/api/locks")).status_code == 200
            assert (await client.get("/healthz")).status_code == 200

            proxy.start()  # same port: it comes back

            async def ready() -> bool:
                return (await client.get("/readyz")).json()["status"] == "ready"

            await wait_until_async(ready, what="/readyz to recover")
            assert "Database unreachable" not in (await client.get("/locks")).text
    finally:
        proxy.close()


async def test_target_down_is_named_not_the_state(
    pg_server_url: str, db_name: str, state_db_url: str
) -> None:
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    target_url = proxy.url(db_name)
    proxy.stop()  # nothing listens: the target is down from the start
    try:
        app = create_app(
            Settings.from_env(
                {
                    "DASHBOARD_DATABASE_URL": target_url,
                    "DASHBOARD_STATE_DATABASE_URL": state_db_url,
                    "DASHBOARD_AUTH_MODE": "none",
                    "DASHBOARD_SCRIPT_LOCATION": str(DEMO),
                    "DASHBOARD_SAMPLE_INTERVAL_S": "60",
                }
            )
        )
        async with AsyncTestClient(app) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "unavailable"
            assert body["reason"].startswith("target database unreachable: ")
            assert "state database" not in body["reason"]
            assert body["databases"]["state"] == {"ok": True, "reason": None}
            page = await client.get("/migrations")
            assert "Database unreachable (target database)" in page.text
            assert "Database unreachable (state database)" not in page.text
            # the dashboard's own state still answers: the audit log is readable
            assert (await client.get("/api/audit")).status_code == 200
    finally:
        proxy.close()


# -- logins shared by two processes ---------------------------------------------------------
def password_app(db_url: str, users_file: Path) -> Litestar:
    return create_app(
        Settings.from_env(
            {
                "DASHBOARD_DATABASE_URL": db_url,
                "DASHBOARD_AUTH_MODE": "password",
                "DASHBOARD_SECRET_KEY": SECRET,
                "DASHBOARD_USERS_FILE": str(users_file),
                "DASHBOARD_ROLES": "carol=operator",
                "DASHBOARD_SAMPLE_INTERVAL_S": "60",
            }
        )
    )


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.txt"
    users.add(path, "carol", PASSWORD)
    return path


async def login(client: Any, password: str = PASSWORD, user: str = "carol") -> Any:
    await client.get("/login")
    token = client.cookies.get("csrftoken")
    return await client.post(
        "/login",
        data={"username": user, "password": password, "_csrf_token": token},
        follow_redirects=False,
    )


async def login_without_session_cookie(client: Any, password: str = PASSWORD) -> Any:
    """A login post from a client that sends no session cookie (every answer sets one, and
    a session cookie cannot be checked while the state database is down)."""
    client.cookies.delete("session")
    return await client.post(
        "/login",
        data={
            "username": "carol",
            "password": password,
            "_csrf_token": client.cookies.get("csrftoken"),
        },
        follow_redirects=False,
    )


async def test_a_login_on_one_process_is_honoured_by_another_and_logout_ends_it(
    db_url: str, users_file: Path
) -> None:
    app_a, app_b = password_app(db_url, users_file), password_app(db_url, users_file)
    async with AsyncTestClient(app_a) as a, AsyncTestClient(app_b) as b:
        await a.get("/login")
        before = a.cookies.get("session")  # every answer hands out a session id
        ok = await login(a)
        assert ok.status_code in (302, 303), ok.text
        session = a.cookies.get("session")
        assert session and session != "null"
        assert session != before  # a login never keeps the id the browser came with
        assert (await a.get("/api/migrations")).status_code == 200

        assert (await b.get("/api/migrations")).status_code == 401  # B: no cookie yet
        b.cookies.set("session", session)
        page = await b.get("/")
        assert page.status_code == 200 and "carol · operator" in page.text
        assert (await b.get("/api/migrations")).status_code == 200

        rows = await fetch(db_url, "SELECT key, expires_at FROM dashboard.login_sessions")
        assert [r["key"] for r in rows] == [session] and rows[0]["expires_at"] is not None

        out = await b.post(
            "/logout", headers={"x-csrftoken": await csrf_token(b)}, follow_redirects=False
        )
        assert out.status_code in (302, 303)
        assert (await a.get("/api/migrations")).status_code == 401  # ended on A too
        assert await fetch(db_url, "SELECT 1 FROM dashboard.login_sessions") == []
        # anonymous requests and probes store no session rows
        for path in ("/login", "/healthz", "/readyz", "/static/style.css"):
            await a.get(path)
        assert await fetch(db_url, "SELECT 1 FROM dashboard.login_sessions") == []


async def test_login_rate_limit_is_shared_by_two_processes(db_url: str, users_file: Path) -> None:
    app_a, app_b, app_c = (password_app(db_url, users_file) for _ in range(3))
    # three processes, one client address each: only the user name is common
    async with (
        client_from(app_a, "10.0.0.1") as a,
        client_from(app_b, "10.0.0.2") as b,
        client_from(app_c, "10.0.0.3") as c,
    ):
        first = await login(c, "wrong password")
        assert first.status_code == 401
        ok = await login(b)  # a success forgets the user's failures, everywhere
        assert ok.status_code in (302, 303), ok.text
        assert (
            await fetch(db_url, "SELECT 1 FROM dashboard.login_failures WHERE key = 'u:carol'")
            == []
        )
        for i in range(5):
            assert (await login(a, f"wrong password {i}")).status_code == 401
        keys = await fetch(
            db_url, "SELECT key, count(*) AS n FROM dashboard.login_failures GROUP BY key"
        )
        assert {r["key"]: r["n"] for r in keys} == {"u:carol": 5, "a:10.0.0.1": 5, "a:10.0.0.3": 1}
        limited = await login(b)  # the right password, on the other process
        assert limited.status_code == 429, limited.text
        assert "too many failed logins" in limited.json()["error"]
        assert int(limited.headers["Retry-After"]) > 0


async def test_logins_while_the_state_database_is_down(
    pg_server_url: str, db_url: str, state_db_name: str, users_file: Path
) -> None:
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    try:
        app = create_app(
            Settings.from_env(
                {
                    "DASHBOARD_DATABASE_URL": db_url,
                    "DASHBOARD_STATE_DATABASE_URL": proxy.url(state_db_name),
                    "DASHBOARD_AUTH_MODE": "password",
                    "DASHBOARD_SECRET_KEY": SECRET,
                    "DASHBOARD_USERS_FILE": str(users_file),
                    "DASHBOARD_SAMPLE_INTERVAL_S": "60",
                }
            )
        )
        async with AsyncTestClient(app) as client:
            assert (await login(client)).status_code in (302, 303)
            assert (await client.get("/api/migrations")).status_code == 200
            session = client.cookies.get("session")
            assert session
            proxy.stop()

            # a session that cannot be checked is refused with the reason, not dropped
            r = await client.get("/api/migrations")
            assert r.status_code == 503, r.text
            assert "state database is unreachable" in r.json()["error"]
            assert (await client.get("/healthz")).status_code == 200
            # a login cannot be kept: 503 with the reason (never a 500)
            r = await login_without_session_cookie(client)
            assert r.status_code == 503, r.text
            assert "Signing in is unavailable: the state database is unreachable" in r.text
            # the rate limit falls back to this process's memory: still enforced
            for i in range(5):
                r = await login_without_session_cookie(client, f"wrong password {i}")
                assert r.status_code == 401, r.text
            assert (await login_without_session_cookie(client)).status_code == 429
            limiter = app.state.dashboard.login_limiter
            assert limiter.shared_error is not None

            proxy.start()
            client.cookies.set("session", session)

            async def back() -> bool:
                return (await client.get("/api/migrations")).status_code == 200

            await wait_until_async(back, what="the session to be honoured again")
    finally:
        proxy.close()


# -- the session store --------------------------------------------------------------------
@pytest.fixture
async def store(db_url: str) -> AsyncIterator[PostgresSessionStore]:
    state = StateStore(db_url)
    try:
        yield PostgresSessionStore(state)  # lazily: the schema is made on first use
    finally:
        await state.stop()


async def test_session_store_expiry_and_renewal(store: PostgresSessionStore) -> None:
    await store.set("short", b'{"user": "carol"}', expires_in=timedelta(milliseconds=300))
    assert await store.get("short") == b'{"user": "carol"}'
    assert await store.exists("short")

    async def expired() -> bool:
        return await store.get("short") is None

    await wait_until_async(expired, timeout_s=5, what="the short session to expire")
    assert not await store.exists("short")
    assert await store.expires_in("short") is None
    assert await store.purge() == 1  # expired rows go on the next purge

    await store.set("long", b'{"user": "carol"}', expires_in=100)
    left = await store.expires_in("long")
    assert left is not None and 98 <= left <= 100
    assert await store.get("long", renew_for=1000) == b'{"user": "carol"}'
    left = await store.expires_in("long")
    assert left is not None and 998 <= left <= 1000
    await store.set("long", b'{"user": "carol"}', expires_in=10)  # a shorter expiry is kept
    left = await store.expires_in("long")
    assert left is not None and left <= 10

    # the middleware writes the session back on every answer: unchanged, the row is left alone
    async def row_version(key: str) -> str:
        async with store.state.connect() as conn:
            found = await conn.execute(
                text("SELECT xmin::text FROM dashboard.login_sessions WHERE key = :key"),
                {"key": key},
            )
            return str(found.scalar_one())

    await store.set("same", b'{"user": "carol"}', expires_in=1000)
    version = await row_version("same")
    await store.set("same", b'{"user": "carol"}', expires_in=1000)
    assert await store.get("same", renew_for=1000) == b'{"user": "carol"}'
    assert await row_version("same") == version
    await store.set("same", b'{"user": "dave"}', expires_in=1000)
    assert await row_version("same") != version

    await store.set("forever", "text value")  # no expiry: never expires, nothing to renew
    assert await store.expires_in("forever") is None
    assert await store.get("forever", renew_for=5) == b"text value"
    assert await store.expires_in("forever") is None

    await store.set("anonymous", b"{}", expires_in=100)  # empty sessions are not stored
    assert not await store.exists("anonymous")
    await store.delete("long")
    assert await store.get("long") is None
    await store.delete_all()
    assert not await store.exists("forever")


async def test_session_store_says_when_the_state_database_is_unreachable() -> None:
    state = StateStore(closed_port_url())
    try:
        store = PostgresSessionStore(state)
        with pytest.raises(SessionStoreUnavailable) as err:
            await store.get("any")
        assert err.value.status_code == 503
        assert "state database is unreachable" in err.value.detail
    finally:
        await state.stop()


# -- the rate limiter's decision and its fallback -------------------------------------------
def test_retry_after_is_decided_by_the_nth_newest_failure() -> None:
    assert retry_after([], 3, 60) == 0
    assert retry_after([1, 2], 3, 60) == 0
    assert retry_after([10, 0, 5], 3, 60) == 50  # the 3rd newest leaves in 50 s
    assert retry_after([0, 5, 10, 50], 3, 60) == 50
    assert retry_after([0, 5, 61], 3, 60) == 0  # too old to count
    lim = LoginRateLimiter(max_failures=2, window_s=60, clock=lambda: 100.0)
    lim.failed("Eve", "1.2.3.4")
    lim.failed("eve", "5.6.7.8")
    assert lim.retry_after("EVE", "9.9.9.9") == 60  # user names are case-insensitive
    lim.succeeded("eve", "1.2.3.4")
    assert lim.retry_after("eve", "9.9.9.9") == 0


async def test_limiter_falls_back_to_memory_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    state = StateStore(closed_port_url())
    now = [1000.0]
    limiter = LoginLimiter(
        SharedFailureLog(state), max_failures=2, window_s=60, clock=lambda: now[0]
    )
    try:
        with caplog.at_level(logging.WARNING, logger="dashboard.auth.ratelimit"):
            assert await limiter.retry_after("eve", "1.2.3.4") == 0
            await limiter.failed("eve", "1.2.3.4")
            await limiter.failed("eve", "1.2.3.4")
            assert await limiter.retry_after("eve", "1.2.3.4") == 60
        assert limiter.shared_error is not None
        warnings = [r for r in caplog.records if "state database is unreachable" in r.message]
        assert len(warnings) == 1  # once, not per attempt
        now[0] += 61
        assert await limiter.retry_after("eve", "1.2.3.4") == 0
    finally:
        await state.stop()


async def test_shared_failure_log_counts_on_the_database_clock(db_url: str) -> None:
    state = StateStore(db_url)
    try:
        shared = SharedFailureLog(state)
        a, b = LoginLimiter(shared, max_failures=3), LoginLimiter(shared, max_failures=3)
        await a.failed("dave", "10.1.1.1")
        await b.failed("dave", "10.1.1.2")
        assert await a.retry_after("dave", "10.1.1.3") == 0
        await b.failed("dave", "10.1.1.3")
        wait = await a.retry_after("dave", "10.1.1.9")
        assert 290 < wait <= 300
        ages = await shared.recent_ages(["u:dave", "a:10.1.1.1"], 3, 300)
        assert len(ages["u:dave"]) == 3 and len(ages["a:10.1.1.1"]) == 1
        await a.succeeded("dave", "10.1.1.1")
        assert await b.retry_after("dave", "10.1.1.9") == 0
        assert await a.retry_after("x", "10.1.1.1") == 0  # the address keeps its one failure
        assert a.shared_error is None and b.shared_error is None
    finally:
        await state.stop()
