"""Approval rules and audit shapes, pure: no database, no clock (now is passed in)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from dashboard.approvals import rules
from dashboard.approvals.rules import FilePin, Pins, RunFacts
from dashboard.audit.log import outcome_for_status
from dashboard.audit.middleware import action_for, error_from_body, should_record
from dashboard.audit.query import FilterError, parse_filters, safe_cell, to_csv
from dashboard.audit.repo import AuditEntry
from tests.records_support import a_run, an_approval

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def facts(**kw: object) -> RunFacts:
    base: dict[str, object] = {
        "id": 7,
        "status": "awaiting_approval",
        "requested_by": "carol",
        "expires_at": NOW + timedelta(minutes=30),
    }
    base.update(kw)
    return RunFacts(**base)  # type: ignore[arg-type]


def approved(**kw: object) -> RunFacts:
    base: dict[str, object] = {
        "approved_by": "bob",
        "approved_at": NOW - timedelta(minutes=5),
        "decision": "approve",
        "decided_by": "bob",
    }
    base.update(kw)
    return facts(**base)


def test_downgrades_always_need_approval() -> None:
    assert rules.needs_approval(True, "upgrade")
    assert not rules.needs_approval(False, "upgrade")
    assert rules.needs_approval(False, "downgrade")
    assert rules.needs_approval(True, "downgrade")


def test_expiry_is_inclusive_and_ttl_based() -> None:
    end = rules.deadline(NOW, 60)
    assert end == NOW + timedelta(hours=1)
    assert not rules.is_expired(end, end - timedelta(microseconds=1))
    assert rules.is_expired(end, end)
    assert not rules.is_expired(None, NOW)


def test_approve_checks() -> None:
    assert rules.check_approve(facts(), "bob", allow_self=False, now=NOW) is None
    own = rules.check_approve(facts(), "carol", allow_self=False, now=NOW)
    assert own is not None and own.status_code == 403 and own.code == "self_approval"
    assert "DASHBOARD_ALLOW_SELF_APPROVAL" in own.message
    assert rules.check_approve(facts(), "carol", allow_self=True, now=NOW) is None
    twice = rules.check_approve(approved(), "dave", allow_self=False, now=NOW)
    assert twice is not None and (twice.status_code, twice.code) == (409, "already_approved")
    assert "bob" in twice.message
    late = rules.check_approve(facts(), "bob", allow_self=False, now=NOW + timedelta(hours=1))
    assert late is not None and (late.status_code, late.code) == (409, "expired")
    for status, code in (
        ("expired", "expired"),
        ("rejected", "rejected"),
        ("succeeded", "state"),
        ("failed", "state"),
        ("cancelled", "state"),
        ("queued", "started"),
        ("running", "started"),
    ):
        r = rules.check_approve(facts(status=status), "bob", allow_self=False, now=NOW)
        assert r is not None and r.status_code == 409 and r.code == code, status


def test_reject_checks_and_reasons() -> None:
    assert rules.check_reject(facts(), "bob", allow_self=False, now=NOW) is None
    own = rules.check_reject(facts(), "carol", allow_self=False, now=NOW)
    assert own is not None and own.status_code == 403 and "cancel" in own.message
    after = rules.check_reject(approved(), "dave", allow_self=False, now=NOW)
    assert after is not None and after.code == "already_approved"
    for bad in (None, "", "   ", 12, ["x"]):
        text, refusal = rules.validate_reason(bad, required=True)
        assert text is None and refusal is not None and refusal.status_code == 400
    _, long = rules.validate_reason("x" * (rules.MAX_REASON + 1), required=True)
    assert long is not None and long.code == "reason_too_long"
    _, ctl = rules.validate_reason("nope\x00", required=True)
    assert ctl is not None
    text, ok = rules.validate_reason("  <b>not\r\nnow</b>  ", required=True)
    assert ok is None and text == "<b>not\nnow</b>"
    assert rules.validate_reason(None, required=False) == (None, None)


def test_execute_checks() -> None:
    not_yet = rules.check_execute(facts(), "carol", now=NOW)
    assert not_yet is not None and (not_yet.status_code, not_yet.code) == (409, "not_approved")
    assert rules.check_execute(approved(), "carol", now=NOW) is None
    assert rules.check_execute(approved(), "bob", now=NOW) is None
    third = rules.check_execute(approved(), "mallory", now=NOW)
    assert third is not None and third.status_code == 403 and "carol" in third.message
    late = rules.check_execute(approved(), "carol", now=NOW + timedelta(hours=2))
    assert late is not None and late.code == "expired" and "bob" in late.message
    done = rules.check_execute(approved(status="succeeded"), "carol", now=NOW)
    assert done is not None and done.status_code == 409


def test_allowed_actions_follow_roles_and_rules() -> None:
    pending = facts()
    assert rules.allowed_actions(pending, "vic", "viewer", allow_self=False, now=NOW) == {
        "approve": False,
        "reject": False,
        "execute": False,
        "cancel": False,
    }
    op = rules.allowed_actions(pending, "carol", "operator", allow_self=False, now=NOW)
    assert op == {"approve": False, "reject": False, "execute": False, "cancel": True}
    self_admin = rules.allowed_actions(pending, "carol", "admin", allow_self=False, now=NOW)
    assert not self_admin["approve"] and not self_admin["reject"]
    bob = rules.allowed_actions(pending, "bob", "approver", allow_self=False, now=NOW)
    assert bob["approve"] and bob["reject"] and not bob["execute"]
    ready = approved()
    assert rules.allowed_actions(ready, "carol", "operator", allow_self=False, now=NOW)["execute"]
    assert rules.allowed_actions(ready, "bob", "approver", allow_self=False, now=NOW)["execute"]
    assert not rules.allowed_actions(ready, "zed", "admin", allow_self=False, now=NOW)["execute"]
    assert not rules.allowed_actions(ready, None, "viewer", allow_self=False, now=NOW)["cancel"]


def test_approval_state() -> None:
    run = a_run(status="awaiting_approval", queued_at=None, error_detail=None)
    assert rules.approval_state(run, None) == rules.PENDING
    assert rules.approval_state(run, an_approval(decision="approve")) == rules.APPROVED
    assert rules.approval_state(
        run.with_changes(status="rejected"), an_approval(decision="reject")
    ) == (rules.REJECTED)
    assert rules.approval_state(run.with_changes(status="expired"), None) == rules.EXPIRED
    void = run.with_changes(status="failed", error_detail={"approval_void": [{"what": "file"}]})
    assert rules.approval_state(void, an_approval(decision="approve")) == rules.VOID
    assert rules.approval_state(run.with_changes(status="succeeded", queued_at=NOW), None) == (
        rules.NOT_REQUIRED
    )
    assert rules.approval_state(
        run.with_changes(status="succeeded"), an_approval(decision="approve")
    ) == (rules.APPROVED)


def pins(
    sql: str = "a" * 64, files: dict[str, str] | None = None, heads: tuple[str, ...] = ("r1",)
) -> Pins:
    files = {"r2": "f" * 64, "r3": "e" * 64} if files is None else files
    return Pins.make(sql, (FilePin(r, f"{r}_x.py", h) for r, h in files.items()), heads)


def test_compare_pins_names_every_change() -> None:
    assert rules.compare_pins(pins(), pins()) == []
    moved = rules.compare_pins(pins(), pins(heads=("r2",)))
    assert [c.what for c in moved] == ["heads"] and "r1" in moved[0].message
    assert "r2" in moved[0].message and moved[0].after == ["r2"]
    edited = rules.compare_pins(pins(), pins(files={"r2": "0" * 64, "r3": "e" * 64}))
    assert [(c.what, c.revision) for c in edited] == [("file", "r2")]
    assert "r2_x.py" in edited[0].message and "changed" in edited[0].message
    gone = rules.compare_pins(pins(), pins(files={"r2": "f" * 64}))
    assert [(c.what, c.revision) for c in gone] == [("file", "r3")]
    assert "gone" in gone[0].message
    sql = rules.compare_pins(pins(), pins(sql="b" * 64))
    assert [c.what for c in sql] == ["sql"] and "aaaaaaaaaaaa" in sql[0].message
    broken = Pins.make("", pins().files, ("r1",), "SyntaxError: bad")
    assert "SyntaxError" in rules.compare_pins(pins(), broken)[0].message
    everything = rules.compare_pins(
        pins(), pins(sql="b" * 64, files={"r2": "0" * 64, "r3": "e" * 64}, heads=())
    )
    assert [c.what for c in everything] == ["heads", "file", "sql"]
    msg = rules.void_message(everything)
    assert msg == (
        "approval void: the database moved (from r1 to base (nothing applied)); revision file "
        "r2_x.py changed; the plan's SQL changed since it was approved. Nothing ran; request "
        "the run again."
    )
    assert "is gone" in rules.void_message(gone) and "r3_x.py" in rules.void_message(gone)
    stale = rules.void_message(moved, when="requested")
    assert stale.startswith("request out of date: the database moved (from r1 to r2)")


def test_pins_of_request_and_approval() -> None:
    run = a_run(
        sql_sha256="a" * 64,
        from_revs=["r1"],
        plan={
            "steps": [
                {"revision": "r2", "file": "r2_x.py", "file_sha256": "f" * 64},
                {"revision": "r3", "file": "r3_x.py", "file_sha256": "e" * 64},
            ]
        },
    )
    assert Pins.of_request(run) == pins()
    approval = an_approval(
        sql_sha256="a" * 64, file_sha256=pins().files_json(), current_heads=["r1"]
    )
    assert Pins.of_approval(approval) == pins()


def test_audit_filters() -> None:
    q = parse_filters({"actor": " bob ", "action": "run.*", "since": "2026-11-22T03:00"})
    assert q.actor == "bob" and q.action == "run.*" and q.limit == 200
    assert q.since == NOW
    z = parse_filters({"until": "2026-11-22T03:00:00Z", "limit": "5"})
    assert z.until == NOW and z.limit == 5
    for bad in (
        {"since": "yesterday"},
        {"limit": "0"},
        {"limit": "ten"},
        {"limit": "10001"},
        {"since": "2026-11-22", "until": "2026-11-21"},
        {"actor": "x" * 201},
    ):
        with pytest.raises(FilterError):
            parse_filters(bad)


def test_csv_defuses_formulas() -> None:
    for dangerous in ("=1+1", "+SUM(A1)", "-2+3", "@cmd", "\t=x", "\r=x"):
        cell = safe_cell(dangerous)
        assert isinstance(cell, str) and cell.startswith("'")
    assert safe_cell("bob") == "bob" and safe_cell(12) == 12 and safe_cell(None) == ""
    assert safe_cell({"a": "=b"}) == '{"a": "=b"}'
    text = to_csv(
        [
            AuditEntry(
                id=1,
                at=datetime(2026, 11, 22, 3, 0, tzinfo=UTC),
                actor='=HYPERLINK("http://evil","x")',
                address="10.0.0.1",
                action="run.reject",
                target="run 7",
                outcome="rejected",
                detail={"reason": 'no, "not" now'},
            )
        ]
    )
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "at", "actor", "address", "action", "target", "outcome", "detail"]
    assert rows[1][2] == '\'=HYPERLINK("http://evil","x")'
    assert rows[1][7] == '{"reason": "no, \\"not\\" now"}'


def test_which_refusals_are_recorded() -> None:
    assert should_record("POST", 403, False)
    assert should_record("POST", 409, False)
    assert should_record("DELETE", 413, False)
    assert not should_record("POST", 200, False)
    assert not should_record("POST", 500, False)  # errors are logged, not "denied"
    assert not should_record("GET", 404, False)
    assert not should_record("GET", 401, False)
    assert should_record("GET", 401, True)  # someone claimed an identity it may not
    assert action_for("api_run_approve", "POST") == "run.approve"
    assert action_for("backend_terminate", "POST") == "backend.terminate"
    assert action_for(None, "POST") == "http.request"
    assert action_for("api_migrations", "GET") == "auth.identity"
    assert error_from_body(b'{"error": "CSRF token verification failed"}') == (
        "CSRF token verification failed"
    )
    assert error_from_body(b"<html>") is None
    assert outcome_for_status(403, "ok") == "denied"
    assert outcome_for_status(401, "ok") == "denied"
    assert outcome_for_status(409, "ok") == "refused"
    assert outcome_for_status(200, "signalled") == "signalled"
