"""The status pages and JSON twins over HTTP (Litestar AsyncTestClient), health and
readiness, and recovery when the database comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.migrate import alembic_to
from tests.peer import csrf_token
from tests.tcp_proxy import ThreadedPgProxy
from tests.waiting import wait_until_async

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "alembic"


def settings(url: str, **extra: str) -> Settings:
    env = {"DASHBOARD_DATABASE_URL": url, "DASHBOARD_AUTH_MODE": "none"}
    env.update(extra)
    return Settings.from_env(env)


async def test_api_migrations_fields(db_url: str) -> None:
    await alembic_to(db_url, DEMO, "8b2e4d6f1a02")
    async with AsyncTestClient(create_app(settings(db_url))) as client:
        r = await client.get("/api/migrations")
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        assert body["state"] == "pending"
        assert body["current"] == ["8b2e4d6f1a02"]
        assert body["heads"] == ["2c3e48f90d09"]
        assert [set(p) >= {"revision", "down_revision", "message"} for p in body["pending"]]
        assert body["pending"][-1]["revision"] == "2c3e48f90d09"
        assert body["pending"][-1]["irreversible"] is True


async def test_pages_render_status_and_fragments(db_url: str) -> None:
    await alembic_to(db_url, DEMO, "8b2e4d6f1a02")
    async with AsyncTestClient(create_app(settings(db_url))) as client:
        page = await client.get("/migrations")
        assert page.status_code == 200
        html = page.text
        assert 'data-state="pending"' in html
        assert html.count('data-revision="') == 7 + 1  # pending + applied
        assert "<nav>" in html and 'href="/locks"' in html and 'href="/pool"' in html
        assert "Authentication is disabled" in html
        frag = await client.get("/migrations", headers={"HX-Request": "true"})
        assert frag.status_code == 200
        assert "<html" not in frag.text and 'data-state="pending"' in frag.text
        home = await client.get("/")
        assert 'id="schema-card"' in home.text and 'data-state="pending"' in home.text
        for area in ("locks", "pool"):
            r = await client.get(f"/{area}")
            assert r.status_code == 200
        headers = page.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


async def test_static_assets_and_vendored_htmx() -> None:
    s = Settings.from_env({"DASHBOARD_AUTH_MODE": "none"})
    async with AsyncTestClient(create_app(s)) as client:
        r = await client.get("/static/vendor/htmx-2.0.11.min.js")
        assert r.status_code == 200 and "htmx" in r.text[:200]
        assert (await client.get("/static/style.css")).status_code == 200
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "DASHBOARD_DATABASE_URL" in ready.json()["reason"]


async def test_without_a_database_pages_say_so_and_apis_answer_503() -> None:
    s = Settings.from_env({"DASHBOARD_AUTH_MODE": "none"})
    async with AsyncTestClient(create_app(s)) as client:
        for path in ("/api/audit", "/audit.csv", "/audit.json"):
            r = await client.get(path)
            assert r.status_code == 503, path
            assert "no database configured" in r.json()["error"]
        page = await client.get("/audit")
        assert page.status_code == 503 and 'id="audit-error"' in page.text
        locks = await client.get("/api/locks")
        assert locks.status_code == 503 and locks.json()["sampler"] is None
        for area in ("/locks", "/activity", "/pool", "/"):
            assert (await client.get(area)).status_code == 200, area
        assert (await client.get("/api/pool")).json()["pools"] == []
        assert (await client.get("/metrics")).status_code == 200
        # no database to audit in, no database to signal: refused, and nothing fails
        r = await client.post(
            "/api/backends/123/cancel",
            json={"backend_start": "2026-01-01T00:00:00+00:00"},
            headers={"x-csrftoken": await csrf_token(client)},
        )
        assert r.status_code == 503 and r.json()["outcome"] == "error"


async def test_database_down_then_back(pg_server_url: str, db_name: str, db_url: str) -> None:
    await alembic_to(db_url, DEMO, "8b2e4d6f1a02")
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    url = proxy.url(db_name)
    proxy.stop()  # the port is known, nothing listens: the database is "down"
    app = create_app(settings(url, DASHBOARD_SAMPLE_INTERVAL_S="0.2"))
    async with AsyncTestClient(app) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"]
        page = await client.get("/migrations")
        assert page.status_code == 200
        assert "Database unreachable" in page.text
        api = await client.get("/api/migrations")
        assert api.status_code == 503
        assert api.json()["reason"]
        assert (await client.get("/healthz")).status_code == 200
        proxy.start()  # same port: the database "comes back"
        try:

            async def answers() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_until_async(answers, timeout_s=5, what="/readyz to answer 200")

            async def recovered() -> str | None:
                text = (await client.get("/migrations")).text
                return text if "Database unreachable" not in text else None

            text = await wait_until_async(recovered, timeout_s=5, what="/migrations to recover")
            assert "Database unreachable" not in text
            assert 'data-state="pending"' in text
        finally:
            proxy.close()
