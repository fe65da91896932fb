"""Identity modes: proxy headers only from trusted proxies; password mode with argon2
users, sessions, rate limiting and logout; CSRF on unsafe requests."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.auth import users
from dashboard.auth.ratelimit import LoginRateLimiter
from dashboard.auth.roles import role_for
from dashboard.settings import Settings
from tests.peer import client_from, csrf_token


def app_for(db_url: str, **env: str) -> Litestar:
    base = {"DASHBOARD_DATABASE_URL": db_url, "DASHBOARD_SECRET_KEY": "k" * 32}
    base.update(env)
    return create_app(Settings.from_env(base))


def test_role_table() -> None:
    table = {"alice": "admin", "group:dba": "approver", "*": "viewer"}
    assert role_for("alice", (), table) == "admin"
    assert role_for("bob", ("dba",), table) == "approver"
    assert role_for("carol", ("web",), table) == "viewer"
    assert role_for("alice", ("dba",), table) == "admin"


def test_rate_limiter_window() -> None:
    now = [0.0]
    lim = LoginRateLimiter(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("eve", "1.2.3.4") == 0
        lim.failed("eve", "1.2.3.4")
    assert lim.retry_after("eve", "1.2.3.4") == 60
    assert lim.retry_after("other", "1.2.3.4") == 60  # same address
    assert lim.retry_after("eve", "5.6.7.8") == 60  # same user name
    now[0] = 61
    assert lim.retry_after("eve", "1.2.3.4") == 0


async def test_proxy_identity_only_from_trusted_peers(db_url: str) -> None:
    app = app_for(db_url, DASHBOARD_ROLES="alice=admin,group:dba=approver")
    async with client_from(app, "127.0.0.1") as trusted:
        r = await trusted.get("/api/migrations", headers={"X-Forwarded-User": "alice"})
        assert r.status_code == 200
        page = await trusted.get("/", headers={"X-Forwarded-User": "alice"})
        assert "alice · admin" in page.text
        page = await trusted.get(
            "/", headers={"X-Forwarded-User": "bob", "X-Forwarded-Groups": "web, dba"}
        )
        assert "bob · approver" in page.text
        anon = await trusted.get("/api/migrations")
        assert anon.status_code == 401
    async with client_from(app, "203.0.113.9") as untrusted:
        forged = await untrusted.get("/api/migrations", headers={"X-Forwarded-User": "alice"})
        assert forged.status_code == 401
        assert "TRUSTED_PROXIES" in forged.json()["error"]
        assert (await untrusted.get("/healthz")).status_code == 200
        assert (await untrusted.get("/static/style.css")).status_code == 200


async def test_password_login_session_logout_and_rate_limit(db_url: str, tmp_path: Path) -> None:
    users_file = tmp_path / "users.txt"
    users.add(users_file, "carol", "a long enough password")
    app = app_for(
        db_url,
        DASHBOARD_AUTH_MODE="password",
        DASHBOARD_USERS_FILE=str(users_file),
        DASHBOARD_ROLES="carol=operator",
    )
    async with AsyncTestClient(app) as client:
        r = await client.get("/migrations", headers={"accept": "text/html"}, follow_redirects=False)
        assert r.status_code in (302, 303, 307)
        assert r.headers["location"].startswith("/login")
        assert (await client.get("/api/migrations")).status_code == 401
        form = await client.get("/login")
        assert form.status_code == 200 and 'name="_csrf_token"' in form.text
        token = client.cookies.get("csrftoken")
        assert token is not None
        # without the CSRF token the login post is refused
        no_csrf = await client.post("/login", data={"username": "carol", "password": "x"})
        assert no_csrf.status_code == 403
        bad = await client.post(
            "/login",
            data={"username": "carol", "password": "wrong password!", "_csrf_token": token},
        )
        assert bad.status_code == 401 and "Wrong user name or password" in bad.text
        ok = await client.post(
            "/login",
            data={
                "username": "carol",
                "password": "a long enough password",
                "_csrf_token": token,
                "next": "https://evil.example/",
            },
            follow_redirects=False,
        )
        assert ok.status_code in (302, 303), ok.text
        assert ok.headers["location"] == "/"  # never an off-site redirect
        cookie_header = ok.headers.get("set-cookie", "")
        assert "HttpOnly" in cookie_header and "SameSite=strict" in cookie_header.replace(
            "Strict", "strict"
        )
        page = await client.get("/")
        assert page.status_code == 200 and "carol · operator" in page.text
        out = await client.post("/logout", headers={"x-csrftoken": token}, follow_redirects=False)
        assert out.status_code in (302, 303)
        assert (await client.get("/api/migrations")).status_code == 401
        for _ in range(5):
            await client.post(
                "/login",
                data={"username": "carol", "password": "nope nope nope", "_csrf_token": token},
            )
        limited = await client.post(
            "/login",
            data={"username": "carol", "password": "a long enough password", "_csrf_token": token},
        )
        assert limited.status_code == 429
        assert "Retry-After" in limited.headers


async def test_login_page_absent_outside_password_mode(db_url: str) -> None:
    app = app_for(db_url, DASHBOARD_AUTH_MODE="none")
    async with AsyncTestClient(app) as client:
        assert (await client.get("/login")).status_code == 404
        token = await csrf_token(client)
        assert token
