"""Runs when PostgreSQL goes away: every runs page and API answers 503 with the reason (a
page in the layout, with the banner, for a browser), recovers by itself, and a run whose
connections were cut mid-way says what happened — the process never stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.migrate import alembic_to
from tests.peer import csrf_token
from tests.runs_support import HEAD, add_revision
from tests.tcp_proxy import ThreadedPgProxy
from tests.waiting import wait_until_async

PAGE = {"accept": "text/html"}


def settings(url: str, scripts: Path) -> Settings:
    return Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": url,
            "DASHBOARD_AUTH_MODE": "none",
            "DASHBOARD_REQUIRE_APPROVAL": "false",
            "DASHBOARD_SCRIPT_LOCATION": str(scripts),
            "DASHBOARD_SAMPLE_INTERVAL_S": "0.2",
        }
    )


async def test_runs_answer_503_while_the_database_is_down_and_recover(
    pg_server_url: str, db_name: str, db_url: str, demo_scripts: Path
) -> None:
    await alembic_to(db_url, demo_scripts, HEAD)
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    url = proxy.url(db_name)
    try:
        async with AsyncTestClient(create_app(settings(url, demo_scripts))) as client:
            token = {"x-csrftoken": await csrf_token(client)}
            assert (await client.get("/api/runs")).status_code == 200  # up: schema ready
            proxy.stop()
            for path in ("/api/runs", "/api/runs/1"):
                r = await client.get(path)
                assert r.status_code == 503, (path, r.text)
                assert "unreachable" in r.json()["error"], path
            post = await client.post(
                "/api/runs",
                json={"direction": "upgrade", "target": "heads", "expected_current": [HEAD]},
                headers=token,
            )
            assert post.status_code == 503 and "unreachable" in post.json()["error"]
            for path in ("/runs", "/runs/1"):
                page = await client.get(path, headers=PAGE)
                assert page.status_code == 503, path
                assert "text/html" in page.headers["content-type"], path
                assert 'class="banner banner-error"' in page.text, path
                assert "unreachable" in page.text, path
            proxy.start()

            async def back() -> bool:
                return (await client.get("/api/runs")).status_code == 200

            await wait_until_async(back, timeout_s=15, what="/api/runs to answer again")
            assert (await client.get("/runs", headers=PAGE)).status_code == 200
            missing = await client.get("/runs/1", headers=PAGE)
            assert missing.status_code == 404 and 'id="error-page"' in missing.text
    finally:
        proxy.close()


async def test_a_run_cut_off_by_an_outage_says_what_happened(
    pg_server_url: str, db_name: str, db_url: str, demo_scripts: Path
) -> None:
    add_revision(demo_scripts, "dd01sleep001", HEAD, "op.execute('SELECT pg_sleep(20)')")
    await alembic_to(db_url, demo_scripts, HEAD)
    proxy = ThreadedPgProxy(pg_server_url)
    proxy.start()
    url = proxy.url(db_name)
    try:
        async with AsyncTestClient(create_app(settings(url, demo_scripts))) as client:
            token = {"x-csrftoken": await csrf_token(client)}
            r = await client.post(
                "/api/runs",
                json={"direction": "upgrade", "target": "heads", "expected_current": [HEAD]},
                headers=token,
            )
            assert r.status_code == 202, r.text
            run_id = r.json()["id"]

            async def sleeping() -> bool:
                run: dict[str, Any] = (await client.get(f"/api/runs/{run_id}")).json()
                return "pg_sleep" in (run["progress"].get("current_statement") or "")

            await wait_until_async(sleeping, timeout_s=30, what="the run to reach pg_sleep")
            proxy.stop()  # every connection through the proxy is cut
            proxy.start()

            async def ended() -> dict[str, Any] | None:
                res = await client.get(f"/api/runs/{run_id}")
                if res.status_code != 200:
                    return None
                run: dict[str, Any] = res.json()
                return run if run["status"] not in ("queued", "running") else None

            run = await wait_until_async(ended, timeout_s=60, what="the run to be recorded")
            assert run["status"] == "failed", run
            assert run["error"].startswith(
                "the connection to the database was lost during revision dd01sleep001"
            ), run["error"]
            assert "stopped" not in run["error"]
            assert run["error_detail"]["connection_lost"] is True
            assert run["verified_revs"] == [HEAD]  # the cut revision was rolled back
            assert run["log"][-1]["event"] == "failed"
    finally:
        proxy.close()
