"""The Activity page's full session list, pure: rows, waiting vs active, sort, filter and
validation of the query parameters. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard.server.activity import budget_bar, summarize
from dashboard.server.model import LockWait, Privileges, Session, build_settings
from dashboard.server.session_list import (
    SORT_KEYS,
    STATE_FILTERS,
    SessionQuery,
    SessionQueryError,
    display_state,
    is_waiting,
    parse_session_query,
    select,
    session_row,
    session_rows,
    sort_link,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
DESIGN_FIELDS = {
    "pid",
    "backend_start",
    "usename",
    "application_name",
    "client_addr",
    "state",
    "wait_event_type",
    "wait_event",
    "xact_age_s",
    "query_age_s",
    "query",
}


def lock_wait() -> LockWait:
    return LockWait(
        locktype="relation",
        mode="AccessExclusiveLock",
        relation="public.accounts",
        relation_oid=1,
        transactionid=None,
        virtualxid=None,
        objid=None,
        wait_age_s=3.0,
        wait_age_approx=False,
    )


def session(pid: int, **kw: Any) -> Session:
    base: dict[str, Any] = {
        "pid": pid,
        "backend_start": NOW - timedelta(hours=1),
        "usename": "app",
        "application_name": "api",
        "client_addr": "10.0.0.5",
        "state": "idle",
        "wait_event_type": "Client",
        "wait_event": "ClientRead",
        "xact_start": None,
        "query_start": NOW - timedelta(seconds=5),
        "state_change": NOW - timedelta(seconds=4),
        "query": "SELECT 1",
        "backend_type": "client backend",
        "datname": "prod",
    }
    ages = {k: kw.pop(k) for k in ("xact_age_s", "query_age_s", "wait") if k in kw}
    base.update(kw)
    s = Session(**base)
    s.query_age_s = ages.get("query_age_s", 5.0)
    s.state_age_s = 4.0
    s.xact_age_s = ages.get("xact_age_s")
    s.wait = ages.get("wait")
    return s


def pile() -> list[Session]:
    """A holder idle in transaction, two lock waiters, a busy query, idle sessions, the
    dashboard's own connection, a session the role may not see, a server process."""
    return [
        session(
            10,
            state="idle in transaction",
            application_name="billing-api",
            usename="billing",
            xact_age_s=120.0,
            query="UPDATE accounts SET balance = balance - 10 WHERE id = 1",
        ),
        session(
            11,
            state="active",
            wait_event_type="Lock",
            wait_event="relation",
            application_name="alembic",
            xact_age_s=30.0,
            query_age_s=30.0,
            query="ALTER TABLE accounts ADD COLUMN note text",
            wait=lock_wait(),
        ),
        session(
            12,
            state="active",
            wait_event_type="Lock",
            wait_event="relation",
            application_name="web-0",
            xact_age_s=20.0,
            query_age_s=20.0,
            query="SELECT balance FROM accounts WHERE id = 2",
        ),
        session(
            13,
            state="active",
            wait_event_type=None,
            wait_event=None,
            application_name="report",
            client_addr=None,
            xact_age_s=50.0,
            query_age_s=50.0,
            query="SELECT pg_sleep(60)",
        ),
        session(14, application_name="api", query_age_s=500.0),
        session(15, application_name="Api-2", query_age_s=1.0, usename="zed"),
        session(16, state="active", application_name="dashboard", query="SELECT 1 -- sampler"),
        session(
            17,
            state=None,
            wait_event_type=None,
            wait_event=None,
            backend_start=None,
            usename="other",
            application_name="",
            client_addr=None,
            query="<insufficient privilege>",
        ),
        session(
            18,
            state=None,
            backend_type="autovacuum launcher",
            usename=None,
            application_name="",
            wait_event_type="Activity",
        ),
    ]


def rows() -> list[dict[str, Any]]:
    return session_rows(pile(), "prod", query_limit_bytes=1024)


def pids(rs: list[dict[str, Any]]) -> list[int]:
    return [r["pid"] for r in rs]


def test_lock_waiters_are_waiting_not_active() -> None:
    by_pid = {s.pid: s for s in pile()}
    assert is_waiting(by_pid[11]) and is_waiting(by_pid[12])  # pg_locks, or wait_event_type
    assert display_state(by_pid[11]) == "waiting" and display_state(by_pid[12]) == "waiting"
    assert display_state(by_pid[13]) == "active"
    assert display_state(by_pid[17]) == "unknown"
    # Hidden from the role (wait_event_type NULL) but waiting in pg_locks: still waiting.
    hidden_waiter = session(19, state=None, wait_event_type=None, wait=lock_wait())
    assert display_state(hidden_waiter) == "waiting"
    row = session_row(by_pid[11], "prod")
    assert row["state"] == "active"  # as PostgreSQL says it
    assert row["waiting"] is True and row["display_state"] == "waiting"
    assert row["wait_mode"] == "AccessExclusiveLock" and row["wait_target"] == "public.accounts"


def test_summary_counts_waiters_as_waiting_and_lists_every_client_backend() -> None:
    settings = build_settings(
        [
            {"name": "max_connections", "setting": "20", "unit": None, "source": "default"},
            {"name": "track_activity_query_size", "setting": "1024", "unit": None},
        ],
        [],
        None,
        read_at=0,
    )
    body = summarize(pile(), settings, Privileges(role="dash", database="prod"), long_query_s=30)
    assert body["by_state"] == {
        "active": 2,  # 13 and the dashboard's own 16
        "waiting": 2,
        "idle in transaction": 1,
        "idle": 2,
        "unknown": 1,
    }
    assert list(body["by_state"])[:2] == ["active", "waiting"]
    assert sum(body["by_state"].values()) == body["total"] == 8
    listed = body["sessions"]
    assert sorted(pids(listed)) == [10, 11, 12, 13, 14, 15, 16, 17]  # not the launcher
    for r in listed:
        assert DESIGN_FIELDS <= set(r)
    # default order: the oldest transaction first
    assert pids(listed)[:4] == [10, 13, 11, 12]
    bar = budget_bar(body["by_state"], body["usable_connections"])
    assert [s["state"] for s in bar] == [
        "active",
        "waiting",
        "idle in transaction",
        "idle",
        "unknown",
        "free",
    ]
    assert {s["css"] for s in bar} >= {"locks-seg-waiting", "locks-seg-free", "locks-seg-idle"}


def test_rows_never_show_the_placeholder_and_mark_what_may_be_signalled() -> None:
    by_pid = {r["pid"]: r for r in rows()}
    hidden = by_pid[17]
    assert hidden["query"] is None and hidden["query_visible"] is False
    assert "pg_read_all_stats" in hidden["query_note"]
    assert hidden["signalable"] is False  # no backend_start: nothing to re-check
    assert by_pid[16]["is_dashboard"] and not by_pid[16]["signalable"]
    assert by_pid[10]["signalable"] and by_pid[11]["signalable"]
    assert not session_row(pile()[0], "other-db")["signalable"]  # another database
    long = session(20, query="x" * 1023)
    assert session_row(long, "prod", query_limit_bytes=1024)["query_truncated"] is True
    assert session_row(long, "prod", query_limit_bytes=4096)["query_truncated"] is False


def test_parse_defaults_and_valid_values() -> None:
    q = parse_session_query({})
    assert q == SessionQuery() and q.sort == "xact_age" and q.direction == "desc"
    assert not q.filtered
    q = parse_session_query({"sort": "user", "state": "idle in transaction", "q": "  bill "})
    assert (q.sort, q.direction, q.state, q.text) == ("user", "asc", "idle in transaction", "bill")
    assert q.params() == {"sort": "user", "dir": "asc", "state": "idle in transaction", "q": "bill"}
    assert parse_session_query({"state": "all", "dir": "DESC", "sort": "pid"}).direction == "desc"
    assert parse_session_query({"state": ""}).state is None
    for st in STATE_FILTERS:
        assert parse_session_query({"state": st}).state == st


@pytest.mark.parametrize(
    ("params", "field", "names"),
    [
        ({"sort": "password"}, "sort", "xact_age"),
        ({"sort": "xact_age; DROP TABLE x"}, "sort", "query_age"),
        ({"dir": "up"}, "dir", "asc or desc"),
        ({"state": "sleeping"}, "state", "idle in transaction"),
        ({"state": "Active"}, "state", "waiting"),
        ({"q": "a\x00b"}, "q", "control character"),
        ({"q": "x" * 201}, "q", "too long"),
    ],
)
def test_bad_parameters_name_themselves(params: dict[str, str], field: str, names: str) -> None:
    with pytest.raises(SessionQueryError) as info:
        parse_session_query(params)
    assert info.value.field == field
    assert field in info.value.message and names in info.value.message


def test_sort_every_key_both_ways_unknowns_last() -> None:
    all_rows = rows()
    for key in SORT_KEYS:
        for direction in ("asc", "desc"):
            got = select(all_rows, SessionQuery(sort=key, direction=direction)).rows
            assert sorted(pids(got)) == sorted(pids(all_rows)), key
    xact = pids(select(all_rows, SessionQuery(sort="xact_age", direction="asc")).rows)
    assert xact[:4] == [12, 11, 13, 10]  # then the sessions without a transaction
    assert set(xact[4:]) == {14, 15, 16, 17}
    query_age = pids(select(all_rows, SessionQuery(sort="query_age", direction="desc")).rows)
    assert query_age[0] == 14 and query_age[1] == 13
    state = select(all_rows, SessionQuery(sort="state", direction="asc")).rows
    assert [r["display_state"] for r in state] == [
        "active",
        "active",
        "waiting",
        "waiting",
        "idle in transaction",
        "idle",
        "idle",
        "unknown",
    ]
    assert pids(state)[:2] == [13, 16]  # within a state: the oldest transaction first
    apps = pids(select(all_rows, SessionQuery(sort="application", direction="asc")).rows)
    assert apps[:3] == [11, 14, 15]  # alembic, api, Api-2 (case-insensitive)
    assert apps[-1] == 17  # empty application name: last
    apps_desc = pids(select(all_rows, SessionQuery(sort="application", direction="desc")).rows)
    assert apps_desc[-1] == 17  # unknown last in both directions
    client = pids(select(all_rows, SessionQuery(sort="client", direction="desc")).rows)
    assert set(client[-2:]) == {13, 17}  # local socket / hidden: no address
    wait = select(all_rows, SessionQuery(sort="wait_event", direction="asc")).rows
    assert [r["wait_event_type"] for r in wait][:6] == ["Client"] * 4 + ["Lock"] * 2
    assert {r["pid"] for r in wait[-2:]} == {13, 17}  # not waiting on anything: last


def test_filter_by_state_and_text() -> None:
    all_rows = rows()

    def only(**kw: Any) -> list[int]:
        return sorted(pids(select(all_rows, SessionQuery(**kw)).rows))

    assert only(state="waiting") == [11, 12]
    assert only(state="active") == [13, 16]
    assert only(state="idle in transaction") == [10]
    assert only(state="unknown") == [17]
    assert only(state="not idle") == [10, 11, 12, 13, 16, 17]
    assert only(text="BILLING") == [10]  # user and application, any case
    assert only(text="accounts") == [10, 11, 12]  # query text
    assert only(text="10.0.0") == [10, 11, 12, 14, 15, 16]  # client address
    assert only(text="insufficient") == []  # never the server's placeholder
    assert only(text="14") == [14]  # a pid
    assert only(state="waiting", text="web") == [12]
    sel = select(all_rows, SessionQuery(state="waiting"), limit=1)
    assert (sel.total, sel.matched, len(sel.rows)) == (8, 2, 1)


def test_select_adds_the_blocking_graph_without_touching_the_rows() -> None:
    all_rows = rows()
    sel = select(all_rows, SessionQuery(), blast_radius={10: 2}, blocked_by={11: [10]})
    by_pid = {r["pid"]: r for r in sel.rows}
    assert by_pid[10]["blast_radius"] == 2 and by_pid[10]["blocked_by"] == []
    assert by_pid[11]["blocked_by"] == [10] and by_pid[11]["blast_radius"] == 0
    assert "blast_radius" not in all_rows[0]  # the snapshot's cached rows stay as they were


def test_sort_links_flip_the_current_key_and_keep_filters() -> None:
    q = SessionQuery(sort="xact_age", direction="desc", state="waiting", text="web")
    assert sort_link(q, "xact_age") == {
        "sort": "xact_age",
        "dir": "asc",
        "state": "waiting",
        "q": "web",
    }
    assert sort_link(q, "user")["dir"] == "asc"
    assert sort_link(q, "query_age")["dir"] == "desc"
    assert sort_link(SessionQuery(sort="user", direction="asc"), "user")["dir"] == "desc"
