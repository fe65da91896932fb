"""Pure parts of the server area: settings merge, activity summary, input parsing and the
interpretation of the signalling statement. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard.server.actions import BadInput, interpret, parse_backend_start, parse_pid
from dashboard.server.activity import budget_bar, summarize
from dashboard.server.model import (
    LockWait,
    Privileges,
    Session,
    build_settings,
    parse_duration_ms,
)
from dashboard.server.snapshot import build_snapshot

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def setting(
    name: str, value: str, source: str = "default", unit: str | None = "ms"
) -> dict[str, Any]:
    return {"name": name, "setting": value, "unit": unit, "source": source, "boot_val": "0"}


def base_settings(**over: str) -> list[dict[str, Any]]:
    rows = [
        setting("server_version_num", "150004", unit=None),
        setting("max_connections", "100", unit=None),
        setting("superuser_reserved_connections", "3", unit=None),
        setting("statement_timeout", "5000", source="client"),  # the dashboard's own
        setting("lock_timeout", "500", source="client"),
        setting("idle_in_transaction_session_timeout", "15000", source="client"),
        setting("idle_session_timeout", "0"),
    ]
    for r in rows:
        if r["name"] in over:
            r["setting"] = over[r["name"]]
    return rows


def test_parse_duration() -> None:
    assert parse_duration_ms("5min") == 300_000
    assert parse_duration_ms("0") == 0
    assert parse_duration_ms("250") == 250
    assert parse_duration_ms("1.5s") == 1500
    assert parse_duration_ms("30", "s") == 30_000
    assert parse_duration_ms("'10s'") == 10_000
    assert parse_duration_ms("soon") is None
    assert parse_duration_ms(None) is None


def test_settings_ignore_the_dashboards_own_overrides() -> None:
    s = build_settings(base_settings(), [], None, read_at=0)
    assert s.max_connections == 100 and s.usable_connections == 97
    it = s.timeouts["idle_in_transaction_session_timeout"]
    assert it.ms == 0 and it.unbounded and "assumed" in it.origin
    assert s.timeouts["idle_session_timeout"].origin == "built-in default"


def test_settings_precedence_database_file_and_roles() -> None:
    file_rows = [
        {"name": "idle_in_transaction_session_timeout", "setting": "1min"},
        {"name": "statement_timeout", "setting": "30s"},
    ]
    db_roles: list[dict[str, Any]] = [
        {"role": None, "this_database": True, "cfg": "statement_timeout=10s"},
        {"role": "batch", "this_database": False, "cfg": "statement_timeout=0"},
        {"role": "batch", "this_database": True, "cfg": "statement_timeout=2h"},
        {"role": "api", "this_database": False, "cfg": "idle_in_transaction_session_timeout=5s"},
    ]
    s = build_settings(base_settings(), db_roles, file_rows, read_at=0)
    st = s.timeouts["statement_timeout"]
    assert st.ms == 10_000 and st.origin == "ALTER DATABASE"
    assert st.role_overrides == [("batch", 7_200_000)]  # role+database beats role-wide
    it = s.timeouts["idle_in_transaction_session_timeout"]
    assert it.ms == 60_000 and it.origin == "server configuration"
    assert it.role_overrides == [("api", 5000)]
    assert s.timeouts["lock_timeout"].ms == 0  # not in the file: built-in default


def session(pid: int, **kw: Any) -> Session:
    base: dict[str, Any] = {
        "pid": pid,
        "backend_start": NOW - timedelta(hours=1),
        "usename": "app",
        "application_name": "api",
        "client_addr": "10.0.0.5",
        "state": "idle",
        "wait_event_type": None,
        "wait_event": None,
        "xact_start": None,
        "query_start": NOW - timedelta(seconds=5),
        "state_change": NOW - timedelta(seconds=4),
        "query": "SELECT 1",
        "backend_type": "client backend",
        "datname": "prod",
    }
    base.update(kw)
    s = Session(**base)
    s.query_age_s = 5.0
    s.state_age_s = 4.0
    return s


def test_activity_summary() -> None:
    settings = build_settings(base_settings(), [], None, read_at=0)
    priv = Privileges(role="dash", database="prod", read_all_stats=False)
    sessions = [
        session(1, state="active", query_age_s=120.0),
        session(2, state="idle in transaction", xact_start=NOW, application_name="worker"),
        session(3, state="idle", usename="report", client_addr=None),
        session(4, state=None, query="<insufficient privilege>", backend_start=None),
        session(5, backend_type="autovacuum launcher", state=None),
        session(6, state="active", application_name="dashboard"),
    ]
    sessions[0].query_age_s = 120.0
    sessions[1].xact_age_s = 300.0
    body = summarize(sessions, settings, priv, long_query_s=30)
    assert body["max_connections"] == 100 and body["usable_connections"] == 97
    assert body["total"] == 5  # client backends only
    assert body["by_state"] == {"active": 2, "idle in transaction": 1, "idle": 1, "unknown": 1}
    assert list(body["by_state"])[0] == "active"
    assert body["by_application"][0] == {"name": "api", "count": 3}
    assert {"name": "local socket", "count": 1} in body["by_client_addr"]
    assert [s["pid"] for s in body["idle_in_transaction"]] == [2]
    assert [s["pid"] for s in body["long_running"]] == [1]  # not the dashboard's own
    assert body["hidden_sessions"] == 1
    codes = {w["code"] for w in body["warnings"]}
    assert codes == {"idle_in_transaction_unbounded", "insufficient_privilege"}
    assert body["by_backend_type"]["autovacuum launcher"] == 1


def test_budget_bar_segments() -> None:
    segs = budget_bar({"active": 10, "idle": 40}, 100)
    assert [(s["state"], s["x"], s["width"]) for s in segs] == [
        ("active", 0.0, 10.0),
        ("idle", 10.0, 40.0),
        ("free", 50.0, 50.0),
    ]
    over = budget_bar({"active": 150}, 100)
    assert over == [
        {"state": "active", "count": 150, "x": 0.0, "width": 100.0, "css": "locks-seg-active"}
    ]


def test_parse_inputs() -> None:
    assert parse_pid("123") == 123
    for bad in ("abc", "-1", "1.5", "", " ", "0", "2147483648", "１２３"):
        with pytest.raises(BadInput):
            parse_pid(bad)
    ts = parse_backend_start("2025-01-01T12:00:00.123456+00:00")
    assert ts.microsecond == 123456
    for bad_ts in (None, "", "noon", "2025-01-01T12:00:00", 5):
        with pytest.raises(BadInput):
            parse_backend_start(bad_ts)


def row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pid": 7,
        "backend_start": NOW,
        "datname": "prod",
        "backend_type": "client backend",
        "application_name": "api",
        "usename": "app",
        "state": "active",
        "identity_ok": True,
        "same_database": True,
        "client_backend": True,
        "dashboard_own": False,
        "signalled": True,
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("kw", "alive", "status", "outcome"),
    [
        ({}, None, 200, "cancel_sent"),
        ({"identity_ok": False, "signalled": None}, None, 409, "stale"),
        ({"same_database": False, "signalled": None}, None, 403, "other_database"),
        ({"client_backend": False, "signalled": None}, None, 403, "not_client_backend"),
        ({"dashboard_own": True, "signalled": None}, None, 403, "dashboard_own"),
        ({"backend_start": None, "identity_ok": None}, None, 403, "insufficient_privilege"),
        ({"signalled": False}, False, 404, "exited"),
    ],
)
def test_interpret_cancel(
    kw: dict[str, Any], alive: bool | None, status: int, outcome: str
) -> None:
    out = interpret("cancel", 7, NOW, row(**kw), alive)
    assert (out.status_code, out.outcome) == (status, outcome)
    assert out.ok == (status < 400)
    if not out.ok:
        assert out.to_json()["error"] == out.message


def test_interpret_terminate_and_missing() -> None:
    assert interpret("terminate", 7, NOW, row(), None).outcome == "terminated"
    slow = interpret("terminate", 7, NOW, row(signalled=False), True)
    assert (slow.status_code, slow.outcome) == (202, "terminate_sent")
    gone = interpret("terminate", 7, NOW, None, None)
    assert (gone.status_code, gone.outcome) == (404, "not_found")
    idle = interpret("cancel", 7, NOW, row(state="idle in transaction"), None)
    assert idle.ok and not idle.effective and "terminate" in idle.message


def sample_row(pid: int, blocked_by: list[int] | None = None, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "pid": pid,
        "backend_start": NOW - timedelta(minutes=10),
        "usename": "app",
        "application_name": f"app-{pid}",
        "client_addr": "10.0.0.1",
        "state": "active",
        "wait_event_type": "Lock" if blocked_by else None,
        "wait_event": "relation" if blocked_by else None,
        "xact_start": NOW - timedelta(minutes=5),
        "query_start": NOW - timedelta(minutes=1),
        "state_change": NOW - timedelta(minutes=1),
        "query": f"query of {pid}",
        "backend_type": "client backend",
        "datname": "prod",
        "blocked_by": blocked_by,
        "wait_locktype": "relation" if blocked_by else None,
        "wait_mode": "AccessExclusiveLock" if blocked_by else None,
        "wait_start": NOW - timedelta(seconds=30) if blocked_by else None,
        "wait_xid": None,
        "wait_vxid": None,
        "wait_objid": None,
        "wait_relid": 16384 if blocked_by else None,
        "wait_relation": "public.t" if blocked_by else None,
        "server_now": NOW,
    }
    r.update(kw)
    return r


def test_snapshot_bodies_and_pre14_fallback() -> None:
    settings = build_settings(base_settings(server_version_num="130010"), [], None, read_at=0)
    rows = [sample_row(1, state="idle in transaction"), sample_row(2, [1]), sample_row(3, [2])]
    snap = build_snapshot(
        rows, settings, Privileges(database="prod"), taken_at=0, duration_ms=1, long_query_s=30
    )
    assert snap.blocked_by == {2: [1], 3: [2]} and snap.blast_radius == {1: 2, 2: 1}
    body = snap.locks_json()
    assert body["blocked_count"] == 2 and body["roots"][0]["pid"] == 1
    waiter = body["roots"][0]["blocked"][0]
    # PostgreSQL 13: no waitstart, wait age falls back to the query age, flagged
    assert waiter["wait_age_approx"] is True and waiter["wait_age_s"] == 60.0
    assert "query_start" in body["wait_age_source"]
    assert snap.locks_json() is body  # computed once per snapshot, shared by viewers
    assert snap.sessions[1].xact_age_s == 300.0
    groups = snap.lock_groups()
    assert [n["pid"] for n in groups[0]["rows"]] == [2, 3]


def test_lock_wait_descriptions() -> None:
    def w(locktype: str, **kw: Any) -> LockWait:
        base: dict[str, Any] = {
            "locktype": locktype,
            "mode": "ShareLock",
            "relation": None,
            "relation_oid": None,
            "transactionid": None,
            "virtualxid": None,
            "objid": None,
            "wait_age_s": None,
            "wait_age_approx": False,
        }
        base.update(kw)
        return LockWait(**base)

    assert w("relation", relation="public.t").target() == "public.t"
    assert "other database" in w("relation", relation_oid=5).target()
    assert "transaction 9 must end" in w("transactionid", transactionid="9").target()
    assert w("advisory", objid=42).target() == "advisory lock 42"
    assert "3/17" in w("virtualxid", virtualxid="3/17").target()
