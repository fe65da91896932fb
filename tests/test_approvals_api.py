"""The four-eyes workflow over HTTP on real PostgreSQL: request -> approve -> execute with
the audit trail read back through the API and the CSV export; self-approval; double,
late and unknown approvals; rejection with a reason; approvals voided by a changed
revision file or a moved database; expiry (with an injected clock); bad bodies; CSRF;
forged identity headers. Every refusal: the right 4xx, an audit row, nothing changed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.approval_support import Api, dashboard, version
from tests.migrate import alembic_to
from tests.runs_support import ACK_BACKFILL, BACKFILL, BASE, DEMO, HEAD, add_revision

EXTRA = "zz01approve1"


def unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    keys = ("status", "approved_by", "approved_at", "approval", "started_at", "queued_at", "error")
    assert {k: before[k] for k in keys} == {k: after[k] for k in keys}


async def last_audit(api: Api) -> dict[str, Any]:
    return (await api.audit(limit=1))[0]


async def test_request_approve_execute_story_and_its_audit_trail(
    db_url: str, plain_db_url: str
) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        created = await api.request_run("carol", [BASE])
        run_id = created["id"]
        assert created["status"] == "awaiting_approval"
        run = await api.run(run_id)
        assert run["approval_state"] == "pending" and run["approval"] is None
        assert run["sql"] and len(run["sql_sha256"]) == 64 and run["expires_at"]
        # the requester's page: plan, SQL, SHA-256, and no approve button for oneself
        mine = await api.get("carol", f"/runs/{run_id}")
        assert mine.status_code == 200
        assert 'id="run-sql"' in mine.text and run["sql_sha256"] in mine.text
        assert 'id="approve-button"' not in mine.text and 'id="execute-button"' not in mine.text
        assert "a different person with the approver role must approve it" in mine.text
        # a viewer sees everything, and no button at all
        theirs = await api.get("vic", f"/runs/{run_id}")
        assert 'id="run-sql"' in theirs.text and "approval-form" not in theirs.text
        # the approver's page offers approve and reject
        review = await api.get("bob", f"/runs/{run_id}")
        assert 'id="approve-button"' in review.text and 'id="reject-button"' in review.text
        assert 'id="execute-button"' not in review.text

        ok = await api.post(
            "bob",
            f"/api/runs/{run_id}/approve",
            {"sql_sha256": run["sql_sha256"], "comment": "looks right"},
        )
        assert ok.status_code == 200, ok.text
        approved = ok.json()
        assert approved["status"] == "awaiting_approval"
        assert approved["approval_state"] == "approved" and approved["approved_by"] == "bob"
        pinned = approved["approval"]
        assert pinned["by"] == "bob" and pinned["decision"] == "approve"
        assert pinned["sql_sha256"] == run["sql_sha256"] and pinned["current_heads"] == [BASE]
        assert [f["revision"] for f in pinned["file_sha256"]] == [
            s["revision"] for s in run["plan"]["steps"]
        ]
        assert all(len(f["sha256"]) == 64 for f in pinned["file_sha256"])
        assert pinned["from"] == "127.0.0.1" and pinned["reason"] == "looks right"
        assert datetime.fromisoformat(pinned["expires_at"]) > datetime.now(UTC) + timedelta(
            minutes=59
        )
        ready = await api.get("carol", f"/runs/{run_id}")
        assert 'id="execute-button"' in ready.text and "approved, not started" in ready.text

        go = await api.post("carol", f"/api/runs/{run_id}/execute")
        assert go.status_code == 202, go.text
        assert go.json()["status"] in ("queued", "running", "succeeded")
        done = await api.finished(run_id)
        assert done["status"] == "succeeded", done["error"]
        assert done["approved_by"] == "bob" and done["requested_by"] == "carol"
        events = [e["event"] for e in done["log"]]
        assert events[:3] == ["requested", "approved", "executed"] and events[-1] == "succeeded"
        assert await version(plain_db_url) == done["to"]

        # the trail, newest first, through the API
        trail = await api.audit(action="run.*")
        assert all(set(e) >= {"at", "actor", "action", "target", "outcome"} for e in trail)
        story = [(e["action"], e["outcome"], e["actor"]) for e in reversed(trail)]
        assert story == [
            ("run.request", "created", "carol"),
            ("run.approve", "approved", "bob"),
            ("run.execute", "queued", "carol"),
            ("run.start", "running", "carol"),
            ("run.finish", "succeeded", "carol"),
        ]
        assert {e["target"] for e in trail} == {f"run {run_id}"}
        stamps = [e["at"] for e in trail]
        assert stamps == sorted(stamps, reverse=True)
        by = {e["action"]: e for e in trail}
        assert by["run.request"]["address"] == by["run.approve"]["address"] == "127.0.0.1"
        assert by["run.approve"]["detail"]["sql_sha256"] == run["sql_sha256"]
        assert by["run.finish"]["detail"]["verified"] == done["to"]
        # filters: who, action, outcome, time range
        assert [e["action"] for e in await api.audit(actor="bob")] == ["run.approve"]
        assert [e["actor"] for e in await api.audit(outcome="approved")] == ["bob"]
        since = by["run.approve"]["at"]
        assert {e["action"] for e in await api.audit(action="run.*", since=since)} == {
            "run.approve",
            "run.execute",
            "run.start",
            "run.finish",
        }
        assert await api.audit(action="run.*", until=by["run.request"]["at"]) == []
        assert (await api.get("vic", "/api/audit", since="last tuesday")).status_code == 400

        # ... and through the CSV export, same rows, same order
        export = await api.get("vic", "/audit.csv", action="run.*")
        assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
        assert "attachment" in export.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert [int(r["id"]) for r in rows] == [e["id"] for e in trail]
        assert [(r["action"], r["outcome"], r["actor"]) for r in reversed(rows)] == story
        json_export = await api.get("vic", "/audit.json", action="run.*")
        assert [e["id"] for e in json_export.json()["entries"]] == [e["id"] for e in trail]
        page = await api.get("vic", "/audit", action="run.*")
        assert page.status_code == 200
        assert page.text.count("data-audit-id=") == len(trail)
        assert 'href="/audit.csv?action=run.%2A"' in page.text


async def test_self_approval_is_refused_unless_allowed(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("bob", [BASE]))["id"]  # an approver asking
        before = await api.run(run_id)
        own = await api.post("bob", f"/api/runs/{run_id}/approve")
        assert own.status_code == 403
        assert "different person" in own.json()["error"]
        assert own.json()["extra"]["code"] == "self_approval"
        unchanged(before, await api.run(run_id))
        row = await last_audit(api)
        assert (row["actor"], row["action"], row["outcome"]) == ("bob", "run.approve", "denied")
        assert row["detail"]["code"] == "self_approval" and row["target"] == f"run {run_id}"
        own_reject = await api.post("bob", f"/api/runs/{run_id}/reject", {"reason": "meh"})
        assert own_reject.status_code == 403
        unchanged(before, await api.run(run_id))
        # an admin is no exception to the four-eyes rule
        admin_run = (await api.request_run("ada", [BASE], target="heads"))["id"]
        assert (await api.post("ada", f"/api/runs/{admin_run}/approve")).status_code == 403
    async with dashboard(db_url, DASHBOARD_ALLOW_SELF_APPROVAL="true") as api:
        run_id = (await api.request_run("bob", [BASE]))["id"]
        ok = await api.post("bob", f"/api/runs/{run_id}/approve")
        assert ok.status_code == 200 and ok.json()["approved_by"] == "bob"


async def test_double_late_rejected_executed_and_unknown_approvals(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        assert (await api.post("bob", f"/api/runs/{run_id}/approve")).status_code == 200
        before = await api.run(run_id)
        n = await api.audit_count()
        for who in ("bob", "dave"):
            twice = await api.post(who, f"/api/runs/{run_id}/approve")
            assert twice.status_code == 409
            assert "already approved by bob" in twice.json()["error"]
        late_reject = await api.post("dave", f"/api/runs/{run_id}/reject", {"reason": "no"})
        assert late_reject.status_code == 409 and "cancel" in late_reject.json()["error"]
        unchanged(before, await api.run(run_id))
        assert await api.audit_count() == n + 3
        # executed: nothing to approve any more
        assert (await api.post("carol", f"/api/runs/{run_id}/execute")).status_code == 202
        done = await api.finished(run_id)
        assert done["status"] == "succeeded"
        for path in ("approve", "execute"):
            again = await api.post("dave", f"/api/runs/{run_id}/{path}")
            assert again.status_code in (403, 409)
        again = await api.post("carol", f"/api/runs/{run_id}/execute")
        assert again.status_code == 409 and "succeeded" in again.json()["error"]
        assert (await api.run(run_id))["status"] == "succeeded"
        # unknown ids, including absurd ones: 404, never a 500
        for bad in (999, 2**63, 10**30):
            for path in ("approve", "execute", "cancel"):
                r = await api.post("ada", f"/api/runs/{bad}/{path}")
                assert r.status_code == 404, (bad, path, r.text)
            r = await api.post("ada", f"/api/runs/{bad}/reject", {"reason": "x"})
            assert r.status_code == 404
        assert (await api.get("vic", "/api/runs/999")).status_code == 404
        missing = await last_audit(api)
        assert missing["outcome"] == "refused" and missing["detail"]["status_code"] == 404


async def test_reject_needs_a_reason_and_shows_it_as_text(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url, DASHBOARD_ROLES="carol=operator,bob=approver,*=operator") as api:
        evil_user = "<img src=x onerror=alert(1)>"
        run_id = (await api.request_run(evil_user, [BASE]))["id"]
        before = await api.run(run_id)
        for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": 42}, {"reason": "x" * 1001}):
            r = await api.post("bob", f"/api/runs/{run_id}/reject", body)
            assert r.status_code == 400, (body, r.text)
        assert "reason" in r.json()["error"]
        unchanged(before, await api.run(run_id))
        reason = '<script>alert("pwned")</script> & drop it'
        r = await api.post("bob", f"/api/runs/{run_id}/reject", {"reason": reason})
        assert r.status_code == 200, r.text
        rejected = r.json()
        assert rejected["status"] == "rejected" and rejected["approval_state"] == "rejected"
        assert rejected["approval"]["reason"] == reason and rejected["approved_by"] is None
        page = await api.get("vic", f"/runs/{run_id}")
        assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text
        assert "<img src=x" not in page.text and "&lt;img src=x" in page.text
        audit_page = await api.get("vic", "/audit")
        assert "<script>alert" not in audit_page.text and "<img src=x" not in audit_page.text
        assert "&lt;script&gt;alert" in audit_page.text
        for path in ("approve", "execute"):
            who = "bob" if path == "approve" else evil_user
            late = await api.post(who, f"/api/runs/{run_id}/{path}")
            assert late.status_code == 409 and "rejected by bob" in late.json()["error"]
        row = (await api.audit(action="run.reject", outcome="rejected"))[0]
        assert row["detail"]["reason"] == reason and row["actor"] == "bob"


@pytest.mark.parametrize("edit", ["comment", "sql"])
async def test_approval_void_when_a_revision_file_changes(
    db_url: str, plain_db_url: str, demo_scripts: Path, edit: str
) -> None:
    add_revision(demo_scripts, EXTRA, HEAD, "op.execute('SELECT 1')")
    await alembic_to(db_url, demo_scripts, HEAD)
    async with dashboard(db_url, demo_scripts) as api:
        run_id = (await api.request_run("carol", [HEAD]))["id"]
        assert (await api.post("bob", f"/api/runs/{run_id}/approve")).status_code == 200
        path = demo_scripts / "versions" / f"{EXTRA}_test.py"
        text = path.read_text()
        if edit == "comment":
            path.write_text(text + "\n# reviewed? no: edited after approval\n")
        else:
            path.write_text(text.replace("SELECT 1", "SELECT 2 /* edited after approval */"))
        r = await api.post("carol", f"/api/runs/{run_id}/execute")
        assert r.status_code == 409, r.text
        body = r.json()
        expected = ["file"] if edit == "comment" else ["file", "sql"]
        assert body["extra"]["code"] == "approval_void"
        assert sorted(body["extra"]["changed"]) == expected
        assert "approval void" in body["error"] and f"{EXTRA}_test.py" in body["error"]
        run = await api.run(run_id)
        assert run["status"] == "failed" and run["approval_state"] == "void"
        assert run["started_at"] is None and run["queued_at"] is None
        assert [c["what"] for c in run["error_detail"]["approval_void"]] == expected
        assert await version(plain_db_url) == [HEAD]  # nothing ran
        page = await api.get("carol", f"/runs/{run_id}")
        assert 'id="approval-void"' in page.text and 'data-changed="file"' in page.text
        assert ('data-changed="sql"' in page.text) == (edit == "sql")
        row = await last_audit(api)
        assert (row["action"], row["outcome"], row["detail"]["code"]) == (
            "run.execute",
            "refused",
            "approval_void",
        )
        again = await api.post("carol", f"/api/runs/{run_id}/execute")
        assert again.status_code == 409 and "failed" in again.json()["error"]


async def test_approval_void_when_the_database_moves(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE], target="heads"))["id"]
        ok = await api.approve("bob", run_id, acknowledge=ACK_BACKFILL)
        assert ok.status_code == 200, ok.text
        await alembic_to(db_url, DEMO, "c4d8e1f2a903")  # someone ran alembic by hand
        r = await api.post("bob", f"/api/runs/{run_id}/execute")
        assert r.status_code == 409
        assert r.json()["extra"]["changed"] == ["heads"]
        assert "the database moved" in r.json()["error"] and "c4d8e1f2a903" in r.json()["error"]
        run = await api.run(run_id)
        assert run["status"] == "failed" and run["approval_state"] == "void"
        assert await version(plain_db_url) == ["c4d8e1f2a903"]
        page = await api.get("vic", f"/runs/{run_id}")
        assert 'data-changed="heads"' in page.text
        # a request that went stale before anyone approved it cannot be approved either
        stale = (await api.request_run("carol", ["c4d8e1f2a903"]))["id"]
        await alembic_to(db_url, DEMO, "e6fa04b5c905")
        r = await api.post("bob", f"/api/runs/{stale}/approve")
        assert r.status_code == 409 and r.json()["extra"]["code"] == "request_stale"
        assert (await api.run(stale))["approval"] is None


async def test_requests_and_approvals_expire(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url, DASHBOARD_APPROVAL_TTL_MINUTES="30") as api:
        runner = api.dash.runs
        waiting = (await api.request_run("carol", [BASE]))["id"]
        approved = (await api.request_run("olga", [BASE], target="heads"))["id"]
        ok = await api.approve("bob", approved, acknowledge=ACK_BACKFILL)
        assert ok.status_code == 200, ok.text
        # 31 minutes later, without sleeping
        runner.clock = lambda: datetime.now(UTC) + timedelta(minutes=31)
        late = await api.post("bob", f"/api/runs/{waiting}/approve")
        assert late.status_code == 409 and "expired" in late.json()["error"]
        run = await api.run(waiting)
        assert run["status"] == "expired" and run["approval_state"] == "expired"
        assert "request expired" in run["error"] and run["approval"] is None
        go = await api.post("olga", f"/api/runs/{approved}/execute")
        assert go.status_code == 409 and "expired" in go.json()["error"]
        run = await api.run(approved)
        assert run["status"] == "expired" and "approval expired" in run["error"]
        assert run["approved_by"] == "bob"
        assert await version(plain_db_url) == [BASE]
        expiries = await api.audit(action="run.expire")
        assert {e["target"] for e in expiries} == {f"run {waiting}", f"run {approved}"}
        assert {e["outcome"] for e in expiries} == {"expired"}
        # reading expires lazily too (no action needed)
        third = (await api.request_run("carol", [BASE]))["id"]
        runner.clock = lambda: datetime.now(UTC) + timedelta(minutes=62)
        assert (await api.run(third))["status"] == "expired"
        listing = (await api.get("vic", "/api/runs")).json()["runs"]
        assert {r["status"] for r in listing} == {"expired"}


async def test_downgrades_always_need_approval(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BACKFILL)
    async with dashboard(db_url, DASHBOARD_REQUIRE_APPROVAL="false") as api:
        down = await api.request_run("carol", [BACKFILL], target="-1", direction="downgrade")
        assert down["status"] == "awaiting_approval"
        page = await api.get("carol", "/runs/new", direction="downgrade", target="-1")
        assert "(needs approval)" in page.text
        assert (await api.post("carol", f"/api/runs/{down['id']}/cancel")).status_code == 202
        await alembic_to(db_url, DEMO, BASE, down=True)
        up = await api.request_run("carol", [BASE])
        assert up["status"] == "queued"
        assert (await api.finished(up["id"]))["approval_state"] == "not_required"


async def test_only_requester_or_approver_execute(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        early = await api.post("carol", f"/api/runs/{run_id}/execute")
        assert early.status_code == 409 and "not been approved" in early.json()["error"]
        assert (await api.post("bob", f"/api/runs/{run_id}/approve")).status_code == 200
        before = await api.run(run_id)
        for who, code in (("dave", 403), ("olga", 403), ("ada", 403), ("vic", 403)):
            r = await api.post(who, f"/api/runs/{run_id}/execute")
            assert r.status_code == code, (who, r.text)
        unchanged(before, await api.run(run_id))
        denied = await api.audit(action="run.execute", outcome="denied")
        assert {e["actor"] for e in denied} == {"dave", "olga", "ada", "vic"}
        assert (await api.post("bob", f"/api/runs/{run_id}/execute")).status_code == 202
        assert (await api.finished(run_id))["status"] == "succeeded"


async def test_malformed_and_oversized_bodies(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        before = await api.run(run_id)
        n = await api.audit_count()
        url = f"/api/runs/{run_id}/approve"
        json_ct = {"content-type": "application/json"}
        cases = [
            (url, b"{not json", 400),
            (url, b"[1, 2]", 400),
            (url, b'{"sql_sha256": 5}', 400),
            (f"/api/runs/{run_id}/reject", b'{"reason": null}', 400),
            (url, b"{" + b'"comment": "' + b"x" * 20_000 + b'"}', 413),
            (url, b"x" * 200_000, 413),
            ("/api/runs", b"y" * 200_000, 413),
        ]
        for path, raw, code in cases:
            r = await api.post("bob", path, content=raw, headers=json_ct)
            assert r.status_code == code, (path, raw[:30], r.status_code, r.text[:200])
            assert "error" in r.json()
        unchanged(before, await api.run(run_id))
        rows = (await api.audit(limit=len(cases)))[::-1]
        assert len(rows) == len(cases) and await api.audit_count() == n + len(cases)
        assert [r["detail"].get("status_code") for r in rows] == [c for _, _, c in cases]
        assert {r["outcome"] for r in rows} == {"refused"}
        assert {r["actor"] for r in rows} == {"bob"}


async def test_csrf_is_enforced_and_refusals_recorded(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        before = await api.run(run_id)
        missing = await api.post("bob", f"/api/runs/{run_id}/approve", csrf=False)
        assert missing.status_code == 403 and "CSRF" in missing.json()["error"]
        wrong = await api.client.post(
            f"/api/runs/{run_id}/approve",
            headers={"x-forwarded-user": "bob", "x-csrftoken": "forged-token"},
        )
        assert wrong.status_code == 403
        form = await api.client.post(
            f"/runs/{run_id}/approve",
            data={"sql_sha256": before["sql_sha256"]},
            headers={"x-forwarded-user": "bob"},
        )
        assert form.status_code == 403
        new_run = await api.post(
            "carol",
            "/api/runs",
            {"direction": "upgrade", "target": "heads", "expected_current": [BASE]},
            csrf=False,
        )
        assert new_run.status_code == 403
        unchanged(before, await api.run(run_id))
        assert len((await api.get("vic", "/api/runs")).json()["runs"]) == 1
        rows = (await api.audit(limit=4))[::-1]
        assert [(r["actor"], r["action"], r["outcome"]) for r in rows] == [
            ("bob", "run.approve", "denied"),
            ("bob", "run.approve", "denied"),
            ("bob", "run.approve", "denied"),
            ("carol", "run.request", "denied"),
        ]
        assert all("CSRF" in (r["detail"]["error"] or "") for r in rows)
        # the same form with the token is accepted
        ok = await api.client.post(
            f"/runs/{run_id}/approve",
            data={"sql_sha256": before["sql_sha256"], "_csrf_token": api.token},
            headers={"x-forwarded-user": "bob"},
            follow_redirects=False,
        )
        assert ok.status_code == 303 and ok.headers["location"] == f"/runs/{run_id}"
        # cookies: HttpOnly, SameSite=Strict; security headers on every response
        r = await api.client.get("/healthz")
        for name in ("content-security-policy", "x-content-type-options", "referrer-policy"):
            assert name in r.headers
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]


async def test_cookie_flags(db_url: str) -> None:
    for secure in (False, True):
        async with dashboard(db_url, DASHBOARD_COOKIE_SECURE=str(secure).lower()) as api:
            api.client.cookies.clear()
            fresh = await api.client.get("/healthz")
            cookie = fresh.headers["set-cookie"].lower()
            assert "csrftoken=" in cookie and "httponly" in cookie
            assert "samesite=strict" in cookie
            assert ("secure" in cookie.replace("samesite", "")) == secure


async def test_forged_identity_from_untrusted_address(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        before = await api.run(run_id)
        api.peer.address = "203.0.113.9"
        forged = await api.post("bob", f"/api/runs/{run_id}/approve")
        assert forged.status_code == 401 and "TRUSTED_PROXIES" in forged.json()["error"]
        peek = await api.get("bob", "/api/runs")
        assert peek.status_code == 401
        api.peer.address = "127.0.0.1"
        unchanged(before, await api.run(run_id))
        rows = (await api.audit(limit=2))[::-1]
        assert [(r["actor"], r["action"], r["outcome"]) for r in rows] == [
            ("anonymous", "run.approve", "denied"),
            ("anonymous", "auth.identity", "denied"),
        ]
        assert {r["address"] for r in rows} == {"203.0.113.9"}
        assert {r["detail"]["claimed_user"] for r in rows} == {"bob"}
        page = await api.get("vic", "/audit", outcome="denied")
        assert "claimed to be <strong>bob</strong>" in page.text


async def test_approvals_are_append_only(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    async with dashboard(db_url) as api:
        run_id = (await api.request_run("carol", [BASE]))["id"]
        assert (await api.post("bob", f"/api/runs/{run_id}/approve")).status_code == 200
    conn = await asyncpg.connect(plain_db_url)
    try:
        for sql in (
            "UPDATE dashboard.approvals SET approver = 'mallory'",
            "DELETE FROM dashboard.approvals",
            "TRUNCATE dashboard.approvals CASCADE",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT approver FROM dashboard.approvals") == "bob"
        # no UPDATE/DELETE/TRUNCATE privilege for PUBLIC on either table
        for table in ("audit", "approvals"):
            acl = await conn.fetchval(
                "SELECT relacl::text FROM pg_class WHERE oid = $1::regclass",
                f"dashboard.{table}",
            )
            assert acl is not None
            public = [a for a in acl.strip("{}").split(",") if a.startswith("=")]
            assert all(not set(a.split("=")[1].split("/")[0]) & set("wdD") for a in public)
    finally:
        await conn.close()
