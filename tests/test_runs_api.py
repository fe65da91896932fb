"""The runs API and pages over HTTP: request, preview + typed confirmation, progress,
bad input (4xx, nothing run), double clicks, approval stop, roles."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.settings import Settings
from tests.migrate import alembic_to
from tests.peer import client_from, csrf_token
from tests.runs_support import (
    ACK_BACKFILL,
    ACK_BACKFILL_FORM,
    BASE,
    DEMO,
    HEAD,
    MERGE,
    add_revision,
)
from tests.waiting import holds_for_async

TERMINAL = {"succeeded", "failed", "cancelled", "interrupted", "rejected", "expired"}


def settings(url: str, scripts: Path = DEMO, **extra: str) -> Settings:
    env = {
        "DASHBOARD_DATABASE_URL": url,
        "DASHBOARD_AUTH_MODE": "none",
        "DASHBOARD_REQUIRE_APPROVAL": "false",
        "DASHBOARD_SCRIPT_LOCATION": str(scripts),
    }
    env.update(extra)
    return Settings.from_env(env)


async def token(client: AsyncTestClient[Any]) -> dict[str, str]:
    await client.get("/runs")
    return {"x-csrftoken": str(client.cookies.get("csrftoken"))}


async def finished(
    client: AsyncTestClient[Any], run_id: int, within_s: float = 60, **headers: str
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await client.get(f"/api/runs/{run_id}", headers=headers)).json()
        if body["status"] in TERMINAL:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


async def test_post_runs_upgrade_to_head(db_url: str) -> None:
    async with AsyncTestClient(create_app(settings(db_url))) as client:
        h = await token(client)
        r = await client.post(
            "/api/runs",
            json={
                "direction": "upgrade",
                "target": "heads",
                "expected_current": [],
                "acknowledge": ACK_BACKFILL,
            },
            headers=h,
        )
        assert r.status_code == 202, r.text
        created = r.json()
        assert set(created) >= {"id", "status"} and created["status"] == "queued"
        run = await finished(client, created["id"])
        assert run["status"] == "succeeded", run["error"]
        assert set(run) >= {
            "id",
            "status",
            "from",
            "to",
            "requested_by",
            "approved_by",
            "sql_sha256",
            "log",
        }
        assert run["from"] == [] and run["to"] == [HEAD] and run["verified_revs"] == [HEAD]
        assert run["requested_by"] == "local" and run["approved_by"] is None
        assert len(run["sql_sha256"]) == 64
        applied = [e["revision"] for e in run["log"] if e["event"] == "revision_applied"]
        assert len(applied) == 8 and applied[-1] == HEAD
        assert run["progress"]["done"] == run["progress"]["total"] == 8
        status = (await client.get("/api/migrations")).json()
        assert status["state"] == "up_to_date" and status["current"] == [HEAD]
        listing = (await client.get("/api/runs")).json()["runs"]
        assert [x["id"] for x in listing] == [created["id"]]
        # pages: list, detail (full and htmx fragment), overview card
        page = await client.get("/runs")
        assert f'data-run-id="{created["id"]}"' in page.text
        detail = await client.get(f"/runs/{created['id']}")
        assert (
            'id="run-verified"' in detail.text and "confirmed on a fresh connection" in detail.text
        )
        frag = await client.get(f"/runs/{created['id']}", headers={"HX-Request": "true"})
        assert "<html" not in frag.text and 'data-status="succeeded"' in frag.text
        assert "hx-trigger" not in frag.text.split(">", 1)[0]  # finished: polling stops
        home = await client.get("/")
        assert 'id="runs-card"' in home.text


async def test_bad_input_is_refused_and_nothing_runs(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with AsyncTestClient(create_app(settings(db_url))) as client:
        h = await token(client)

        async def post(body: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
            if raw is not None:
                r = await client.post(
                    "/api/runs", content=raw, headers={**h, "content-type": "application/json"}
                )
            else:
                r = await client.post("/api/runs", json=body, headers=h)
            return r.status_code, r.json()

        cur = [BASE]
        cases = [
            (None, b"{not json", 400, "not valid JSON"),
            ([1, 2], None, 400, "JSON object"),
            (
                {"direction": "sideways", "target": "heads", "expected_current": cur},
                None,
                400,
                "direction",
            ),
            ({"direction": "upgrade", "target": "heads"}, None, 400, "expected_current"),
            (
                {"direction": "upgrade", "target": "heads", "expected_current": "x"},
                None,
                400,
                "expected_current",
            ),
            ({"direction": "upgrade", "target": "", "expected_current": cur}, None, 400, "target"),
            (
                {"direction": "upgrade", "target": "deadbeef", "expected_current": cur},
                None,
                422,
                "deadbeef",
            ),
            (
                {"direction": "upgrade", "target": "base", "expected_current": cur},
                None,
                422,
                "downgrade",
            ),
            (
                {"direction": "downgrade", "target": "-2", "expected_current": cur},
                None,
                422,
                "below base",
            ),
            (
                {"direction": "downgrade", "target": MERGE, "expected_current": cur},
                None,
                422,
                "upgrade",
            ),
            (
                {"direction": "upgrade", "target": BASE, "expected_current": cur},
                None,
                422,
                "already",
            ),
            (
                {"direction": "upgrade", "target": "heads", "expected_current": []},
                None,
                409,
                "not at base",
            ),
        ]
        for body, raw, code, fragment in cases:
            status, reply = await post(body, raw)
            assert status == code, (body, raw, reply)
            assert fragment in reply["error"], (body, reply)
        # CAS refusal carries the actual state
        status, reply = await post(
            {"direction": "upgrade", "target": "heads", "expected_current": [MERGE]}
        )
        assert status == 409 and reply["extra"]["actual_current"] == [BASE]
        # ambiguous prefix: two revisions both start with this
        assert (await client.get("/api/runs")).json()["runs"] == []
    conn = await asyncpg.connect(db_url.replace("+asyncpg", ""))
    try:
        assert await conn.fetch("SELECT version_num FROM alembic_version") == [(BASE,)]
    finally:
        await conn.close()


async def test_double_click_starts_one_run(db_url: str, demo_scripts: Path) -> None:
    add_revision(demo_scripts, "aa01slow0001", HEAD, "op.execute('SELECT pg_sleep(1.5)')")
    await alembic_to(db_url, demo_scripts, HEAD)
    async with AsyncTestClient(create_app(settings(db_url, demo_scripts))) as client:
        h = await token(client)
        body = {"direction": "upgrade", "target": "heads", "expected_current": [HEAD]}
        replies = await asyncio.gather(
            client.post("/api/runs", json=body, headers=h),
            client.post("/api/runs", json=body, headers=h),
        )
        codes = sorted(r.status_code for r in replies)
        assert codes == [202, 409], [r.text for r in replies]
        refused = next(r for r in replies if r.status_code == 409).json()
        first = next(r for r in replies if r.status_code == 202).json()
        assert f"run {first['id']} by local is in progress" in refused["error"]
        # a retry while it runs is refused the same way
        again = await client.post("/api/runs", json=body, headers=h)
        assert again.status_code == 409
        run = await finished(client, first["id"])
        assert run["status"] == "succeeded"
        assert len((await client.get("/api/runs")).json()["runs"]) == 1


async def test_approval_required_stops_at_awaiting_approval(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    s = settings(db_url, DASHBOARD_REQUIRE_APPROVAL="true")
    async with AsyncTestClient(create_app(s)) as client:
        h = await token(client)
        r = await client.post(
            "/api/runs",
            json={"direction": "upgrade", "target": "+1", "expected_current": [BASE]},
            headers=h,
        )
        assert r.status_code == 202 and r.json()["status"] == "awaiting_approval"
        # nothing was launched for it in this process, and it stays where it is
        assert not client.app.state.dashboard.runs.executor.is_local(r.json()["id"])

        async def still_awaiting() -> bool:
            run = (await client.get(f"/api/runs/{r.json()['id']}")).json()
            return bool(run["status"] == "awaiting_approval" and run["started_at"] is None)

        await holds_for_async(still_awaiting, 0.5, what="the run to stay awaiting_approval")
        run = (await client.get(f"/api/runs/{r.json()['id']}")).json()
        assert run["status"] == "awaiting_approval" and run["started_at"] is None
        assert (await client.get("/api/migrations")).json()["current"] == [BASE]
        # cancel before it starts
        c = await client.post(f"/api/runs/{run['id']}/cancel", headers=h)
        assert c.status_code == 202 and c.json()["status"] == "cancelled"
        c2 = await client.post(f"/api/runs/{run['id']}/cancel", headers=h)
        assert c2.status_code == 409
        assert (await client.post("/api/runs/999/cancel", headers=h)).status_code == 404
        assert (await client.get("/api/runs/999")).status_code == 404


async def test_preview_and_typed_confirmation_form(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with AsyncTestClient(create_app(settings(db_url))) as client:
        mig = await client.get("/migrations")
        assert 'id="action-upgrade-head"' in mig.text and 'id="action-downgrade-one"' in mig.text
        pv = (
            await client.get(
                "/api/runs/preview", params={"direction": "upgrade", "target": "heads"}
            )
        ).json()
        assert pv["current"] == [BASE] and pv["plan"]["confirm"] == HEAD
        assert pv["plan"]["irreversible"] == [HEAD]
        assert "ALTER TYPE order_status ADD VALUE" in pv["sql"]
        page = await client.get("/runs/new", params={"direction": "upgrade", "target": "heads"})
        assert page.status_code == 200
        assert pv["sql_sha256"] in page.text and f'data-confirm-value="{HEAD}"' in page.text
        assert "data-irreversible" in page.text
        # the review panel (loaded after the page) offers the acknowledgement the form sends
        panel = await client.get(
            "/review/panel", params={"direction": "upgrade", "target": "heads"}
        )
        assert f'name="ack" value="{ACK_BACKFILL_FORM["ack"]}"' in panel.text
        form = {
            "direction": "upgrade",
            "target": "heads",
            "expected_current": BASE,
            "sql_sha256": pv["sql_sha256"],
            "confirm_value": HEAD,
            "confirm": "wrong",
            **ACK_BACKFILL_FORM,  # the plan includes the data-dependent backfill
        }
        h = {"x-csrftoken": str(client.cookies.get("csrftoken"))}
        bad = await client.post("/runs", data=form, headers=h)
        assert bad.status_code == 400 and 'id="confirm-error"' in bad.text
        assert (await client.get("/api/runs")).json()["runs"] == []
        # the SQL shown must be the SQL run
        stale = await client.post(
            "/runs", data={**form, "confirm": HEAD, "sql_sha256": "0" * 64}, headers=h
        )
        assert stale.status_code == 409
        ok = await client.post(
            "/runs", data={**form, "confirm": HEAD}, headers=h, follow_redirects=False
        )
        assert ok.status_code == 303, ok.text
        run_id = int(ok.headers["location"].rsplit("/", 1)[1])
        run = await finished(client, run_id)
        assert run["status"] == "succeeded" and run["sql_sha256"] == pv["sql_sha256"]
        bad_plan = await client.get("/runs/new", params={"direction": "upgrade", "target": "zzzz"})
        assert bad_plan.status_code == 422 and 'id="plan-error"' in bad_plan.text
        # preview reads only: nothing recorded, nothing changed
        assert len((await client.get("/api/runs")).json()["runs"]) == 1


async def test_roles_guard_run_requests(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    s = settings(db_url, DASHBOARD_AUTH_MODE="proxy", DASHBOARD_ROLES="carol=operator,*=viewer")
    async with client_from(create_app(s)) as client:
        tok = await csrf_token(client, "/runs")
        body = {"direction": "upgrade", "target": "+1", "expected_current": [BASE]}
        viewer = await client.post(
            "/api/runs", json=body, headers={"x-csrftoken": tok, "x-forwarded-user": "victor"}
        )
        assert viewer.status_code == 403
        page = await client.get("/migrations", headers={"x-forwarded-user": "victor"})
        assert 'id="migration-actions"' not in page.text
        op = await client.post(
            "/api/runs", json=body, headers={"x-csrftoken": tok, "x-forwarded-user": "carol"}
        )
        assert op.status_code == 202, op.text
        run = await finished(client, op.json()["id"], 60, **{"x-forwarded-user": "victor"})
        assert run["requested_by"] == "carol" and run["status"] == "succeeded"
        no_csrf = await client.post("/api/runs", json=body, headers={"x-forwarded-user": "carol"})
        assert no_csrf.status_code == 403


async def test_incremental_log_sends_only_new_lines(db_url: str) -> None:
    async with AsyncTestClient(create_app(settings(db_url))) as client:
        h = await token(client)
        r = await client.post(
            "/api/runs",
            json={
                "direction": "upgrade",
                "target": "heads",
                "expected_current": [],
                "acknowledge": ACK_BACKFILL,
            },
            headers=h,
        )
        run_id = r.json()["id"]
        run = await finished(client, run_id)
        full = run["log"]
        first = (await client.get(f"/api/runs/{run_id}/log")).json()
        assert [e["seq"] for e in first["entries"]] == [e["seq"] for e in full]
        assert first["last"] == full[-1]["seq"]
        assert [e["event"] for e in first["entries"]][:2] == ["requested", "started"]
        assert first["entries"][-1]["event"] == "succeeded"
        middle = full[3]["seq"]
        rest = (await client.get(f"/api/runs/{run_id}/log", params={"after": middle})).json()
        assert [e["seq"] for e in rest["entries"]] == [e["seq"] for e in full[4:]]
        caught_up = await client.get(f"/api/runs/{run_id}/log", params={"after": first["last"]})
        assert caught_up.json() == {"entries": [], "last": first["last"]}
        bad = await client.get(f"/api/runs/{run_id}/log", params={"after": -1})
        assert bad.status_code == 400 and "after" in bad.json()["error"]
        assert (await client.get("/api/runs/999/log")).status_code == 404
        # the run page's own poll: new lines only, 286 (stop polling) once finished
        htmx = {"HX-Request": "true"}
        lines = await client.get(f"/runs/{run_id}/log", params={"after": middle}, headers=htmx)
        assert lines.status_code == 200
        assert lines.text.count("<li ") == len(full) - 4
        assert f"after={first['last']}" in lines.text
        done = await client.get(
            f"/runs/{run_id}/log", params={"after": first["last"]}, headers=htmx
        )
        assert done.status_code == 286 and done.text == ""


async def test_reading_runs_never_writes(db_url: str, plain_db_url: str) -> None:
    """A request past its deadline reads as expired, but only the sweeper (or an action on
    it) records that: GET requests write nothing."""
    s = settings(db_url, DASHBOARD_REQUIRE_APPROVAL="true")
    async with AsyncTestClient(create_app(s)) as client:
        h = await token(client)
        r = await client.post(
            "/api/runs",
            json={"direction": "upgrade", "target": "heads", "expected_current": []},
            headers=h,
        )
        run_id = r.json()["id"]
        conn = await asyncpg.connect(plain_db_url)
        try:
            before = await conn.fetchval("SELECT count(*) FROM dashboard.audit")
            log_before = await conn.fetchval("SELECT count(*) FROM dashboard.run_log")
            runs = client.app.state.dashboard.runs
            runs.clock = lambda: datetime.now(UTC) + timedelta(days=1)
            assert (await client.get(f"/api/runs/{run_id}")).json()["status"] == "expired"
            assert {x["status"] for x in (await client.get("/api/runs")).json()["runs"]} == {
                "expired"
            }
            assert (await client.get(f"/runs/{run_id}")).status_code == 200
            assert await conn.fetchval("SELECT status FROM dashboard.runs") == "awaiting_approval"
            assert await conn.fetchval("SELECT count(*) FROM dashboard.audit") == before
            assert await conn.fetchval("SELECT count(*) FROM dashboard.run_log") == log_before
            # an action on it records it (as the sweeper does every few seconds)
            late = await client.post(f"/api/runs/{run_id}/approve", headers=h)
            assert late.status_code == 409 and "expired" in late.json()["error"]
            assert await conn.fetchval("SELECT status FROM dashboard.runs") == "expired"
        finally:
            await conn.close()
