"""Hostile input over HTTP on real PostgreSQL: deeply nested JSON, NUL bytes and control
characters, out-of-range timestamps. Each answers 400 naming the problem; nothing reaches
PostgreSQL and nothing changes. An unexpected exception answers a logged, audited 500."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.auth import users
from dashboard.runs.service import RunService
from dashboard.settings import Settings
from tests.approval_support import Api, dashboard
from tests.migrate import alembic_to
from tests.peer import csrf_token
from tests.runs_support import BASE, DEMO
from tests.waiting import wait_until_async

# Litestar's default logging config replaces the root logger's handlers when the app is
# built, so the test listens on the errors logger itself.
ERRORS_LOGGER = logging.getLogger("dashboard.errors")
RUN_KEYS = ("status", "approved_by", "approved_at", "approval", "started_at", "queued_at")


def errors_of(r: Any) -> str:
    body = r.json()
    assert body["status_code"] == r.status_code, body
    return str(body["error"])


async def raw_post(api: Api, user: str, path: str, content: bytes) -> Any:
    return await api.post(user, path, content=content, headers={"content-type": "application/json"})


async def snapshot(api: Api, run_id: int) -> dict[str, Any]:
    run = await api.run(run_id)
    return {k: run[k] for k in RUN_KEYS}


async def test_deeply_nested_json_is_400_on_every_json_post(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        before = await snapshot(api, run_id)
        runs_before = len((await api.get("vic", "/api/runs")).json()["runs"])
        posts = [
            ("carol", "/api/runs"),
            ("bob", f"/api/runs/{run_id}/approve"),
            ("bob", f"/api/runs/{run_id}/reject"),
            ("carol", f"/api/runs/{run_id}/execute"),
            ("carol", "/api/backends/4242/cancel"),
            ("ada", "/api/backends/4242/terminate"),
        ]
        # past the JSON decoder's recursion limit (under the 4 KiB body limit of the
        # backend actions), and deep enough to be pointless though the decoder copes
        bodies = [b"[" * 5000, b"[" * 4000, b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}"]
        for user, path in posts:
            for body in bodies[1:] if "/backends/" in path else bodies:
                r = await raw_post(api, user, path, body)
                assert r.status_code == 400, (path, r.status_code, r.text)
                assert "nests too deeply" in errors_of(r), (path, r.text)
        assert await snapshot(api, run_id) == before
        assert len((await api.get("vic", "/api/runs")).json()["runs"]) == runs_before


async def test_unexpected_exception_is_a_logged_and_audited_500(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: RunService, limit: int = 50) -> list[dict[str, Any]]:
        raise RuntimeError("the list of runs is broken")

    async with dashboard(db_url) as api:
        await api.audit()  # the state schema exists before the failure is recorded
        monkeypatch.setattr(RunService, "list_runs", broken)
        ERRORS_LOGGER.addHandler(caplog.handler)
        try:
            r = await api.get("vic", "/api/runs")
        finally:
            ERRORS_LOGGER.removeHandler(caplog.handler)
        assert r.status_code == 500
        assert r.json() == {"error": "internal error (logged)", "status_code": 500}
        assert "the list of runs is broken" not in r.text
        logged = [
            rec
            for rec in caplog.records
            if rec.levelno >= logging.ERROR and "GET /api/runs" in rec.getMessage()
        ]
        assert logged, [rec.getMessage() for rec in caplog.records]
        assert logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError

        async def audited() -> list[dict[str, Any]]:
            return await api.audit(action="http.error")

        rows = await wait_until_async(audited, what="the http.error audit row")
        row = rows[0]
        assert row["outcome"] == "error" and row["actor"] == "vic"
        assert row["detail"]["method"] == "GET" and row["detail"]["path"] == "/api/runs"
        assert row["detail"]["exception"] == "RuntimeError"


async def test_nul_and_control_characters_in_audit_filters_are_400(db_url: str) -> None:
    async with dashboard(db_url) as api:
        for path in ("/api/audit", "/audit.csv", "/audit.json"):
            for name, value in (("action", "\x00"), ("actor", "bo\x01b"), ("outcome", "ok\x7f")):
                r = await api.get("vic", path, **{name: value})
                assert r.status_code == 400, (path, name, r.text)
                error = errors_of(r)
                assert name in error and "control character" in error, error
        page = await api.get("vic", "/audit", action="\x00")
        assert page.status_code == 400 and "control character" in page.text
        assert (await api.get("vic", "/api/audit", action="run.request")).status_code == 200


async def test_control_characters_in_approval_text_are_400_and_nothing_changes(
    db_url: str,
) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        before = await snapshot(api, run_id)
        rows_before = await api.audit_count()
        refusals = [
            ("approve", {"comment": "fine\u0000"}, "comment"),
            ("approve", {"comment": "bell \x07"}, "comment"),
            ("approve", {"sql_sha256": "ab\u0000"}, "sql_sha256"),
            ("approve", {"sql_sha256": "ab\ncd"}, "sql_sha256"),
            ("reject", {"reason": "no\u0000"}, "reason"),
        ]
        for verb, body, field in refusals:
            r = await api.post("bob", f"/api/runs/{run_id}/{verb}", body)
            assert r.status_code == 400, (body, r.text)
            error = errors_of(r)
            assert field in error and "control character" in error, error
        # the page's form: the run page again, with the reason, under 400
        form = await api.post(
            "bob",
            f"/runs/{run_id}/approve",
            data={"comment": "fine\u0000"},
            follow_redirects=False,
        )
        assert form.status_code == 400 and "control character" in form.text
        assert await snapshot(api, run_id) == before
        # every refusal of an unsafe request is audited (the rows hold no NUL)
        assert await api.audit_count() >= rows_before + len(refusals) + 1
        ok = await api.post(
            "bob", f"/api/runs/{run_id}/approve", {"comment": "  two\nlines\twith a tab  "}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["approval"]["reason"] == "two\nlines\twith a tab"


async def test_control_characters_in_a_run_request_are_400(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"target": "heads\u0000"}, "target"),
            ({"target": "he\x1bads"}, "target"),
            ({"expected_current": [BASE + "\u0000"]}, "expected_current"),
            ({"expected_current": ["\x00"]}, "expected_current"),
        ]
        for change, field in cases:
            body = {"direction": "upgrade", "target": "heads", "expected_current": [BASE]}
            body.update(change)
            r = await api.post("carol", "/api/runs", body)
            assert r.status_code == 400, (change, r.text)
            error = errors_of(r)
            assert field in error and "control character" in error, error
        assert (await api.get("vic", "/api/runs")).json()["runs"] == []
        refused = await api.audit(action="run.request")
        assert len(refused) == len(cases), refused
        assert all(row["outcome"] == "refused" for row in refused)


async def test_control_characters_in_a_login_name_are_400(db_url: str, tmp_path: Path) -> None:
    users_file = tmp_path / "users.txt"
    users.add(users_file, "carol", "a long enough password")
    settings = Settings.from_env(
        {
            "DASHBOARD_DATABASE_URL": db_url,
            "DASHBOARD_SECRET_KEY": "k" * 32,
            "DASHBOARD_AUTH_MODE": "password",
            "DASHBOARD_USERS_FILE": str(users_file),
            "DASHBOARD_ROLES": "carol=operator",
        }
    )
    async with AsyncTestClient(create_app(settings)) as client:
        token = await csrf_token(client, "/login")
        for name in ("carol\u0000", "\x08carol"):
            r = await client.post(
                "/login",
                data={"username": name, "password": "a long enough password", "_csrf_token": token},
            )
            assert r.status_code == 400, (name, r.status_code, r.text)
            assert "user name" in r.text and "control character" in r.text
        assert (await client.get("/api/migrations")).status_code == 401
        ok = await client.post(
            "/login",
            data={"username": "carol", "password": "a long enough password", "_csrf_token": token},
            follow_redirects=False,
        )
        assert ok.status_code in (302, 303), ok.text


@pytest.mark.parametrize("action", ["cancel", "terminate"])
async def test_out_of_range_backend_start_is_400(db_url: str, action: str) -> None:
    async with dashboard(db_url) as api:
        user = "ada" if action == "terminate" else "carol"
        for stamp in (
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "1970-01-01T00:00:00+00:00",
            "2999-01-01T00:00:00+00:00",
            "2026-01-01T00:00:00+00:00\u0000",  # fromisoformat() alone would accept it
        ):
            r = await api.post(user, f"/api/backends/4242/{action}", {"backend_start": stamp})
            assert r.status_code == 400, (stamp, r.status_code, r.text)
            body = r.json()
            assert body["outcome"] == "bad_input" and "backend_start" in body["error"], body
        rows = await api.audit(action=f"backend.{action}")
        assert len(rows) == 5 and all(row["outcome"] == "refused" for row in rows), rows
