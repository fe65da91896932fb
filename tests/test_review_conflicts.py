"""Live conflicts of a migration statement, pure: lock rows + sessions + origins in,
`Conflict`s out (PostgreSQL's conflict table, relation matching, order). No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dashboard.review.conflicts import Conflict, conflicts_for, effective_mode, matching_rows
from dashboard.review.live import RelationSize, live_conflicts, origins_by_pid, resolved_names
from dashboard.review.locks import analyze
from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    ROW_EXCLUSIVE,
    SHARE,
    SHARE_UPDATE_EXCLUSIVE,
    UNKNOWN,
    RelationLock,
)
from dashboard.server.model import (
    INSUFFICIENT_PRIVILEGE,
    Privileges,
    RelationLockRow,
    ServerSettings,
    Session,
    split_relation,
)
from dashboard.server.snapshot import assemble_snapshot, build_snapshot

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def session(pid: int, *, xact_age_s: float | None, query: str = "SELECT 1") -> Session:
    s = Session(
        pid=pid,
        backend_start=NOW - timedelta(hours=1),
        usename="app",
        application_name=f"app-{pid}",
        client_addr=None,
        state="idle in transaction",
        wait_event_type="Client",
        wait_event="ClientRead",
        xact_start=None if xact_age_s is None else NOW - timedelta(seconds=xact_age_s),
        query_start=NOW,
        state_change=NOW,
        query=query,
        backend_type="client backend",
        datname="db",
    )
    s.xact_age_s = xact_age_s
    return s


def row(
    pid: int | None,
    mode: str,
    *,
    granted: bool = True,
    schema: str = "public",
    name: str = "accounts",
    visible: bool = True,
    wait_age_s: float | None = None,
) -> RelationLockRow:
    return RelationLockRow(
        pid=pid,
        mode=mode,
        granted=granted,
        schema=schema,
        name=name,
        regclass=name if visible else f"{schema}.{name}",
        relkind="r",
        visible=visible,
        wait_age_s=wait_age_s,
    )


READER = 101  # AccessShareLock (SELECT in an open transaction)
WRITER = 102  # RowExclusiveLock (UPDATE in an open transaction)
ROWS = [row(READER, ACCESS_SHARE), row(WRITER, ROW_EXCLUSIVE)]
SESSIONS = {
    READER: session(READER, xact_age_s=50.0, query="SELECT * FROM accounts"),
    WRITER: session(WRITER, xact_age_s=20.0, query="UPDATE accounts SET n = 1"),
}


def pids_for(
    mode: str, relation: str = "accounts", rows: list[RelationLockRow] = ROWS
) -> list[int | None]:
    found = conflicts_for([RelationLock(relation, mode)], rows, SESSIONS, {})
    return [c.pid for c in found]


def test_access_share_holder_conflicts_with_access_exclusive_not_with_share() -> None:
    assert pids_for(ACCESS_EXCLUSIVE) == [READER, WRITER]  # ALTER TABLE ... ADD COLUMN
    assert pids_for(SHARE) == [WRITER]  # CREATE INDEX: blocks writers, not readers


def test_row_exclusive_holder_vs_share_update_exclusive() -> None:
    # CREATE INDEX CONCURRENTLY takes ShareUpdateExclusiveLock: neither reader nor writer.
    assert pids_for(SHARE_UPDATE_EXCLUSIVE) == []
    rows = [row(WRITER, ROW_EXCLUSIVE)]
    assert pids_for(SHARE, rows=rows) == [WRITER]
    assert pids_for(ACCESS_EXCLUSIVE, rows=rows) == [WRITER]
    # ... but another ShareUpdateExclusiveLock (VACUUM, another CIC) does conflict.
    assert pids_for(SHARE_UPDATE_EXCLUSIVE, rows=[row(7, SHARE_UPDATE_EXCLUSIVE)]) == [7]


def test_the_statements_real_lock_modes_from_the_analysis() -> None:
    cases = {
        "CREATE INDEX ix ON accounts (n)": [WRITER],
        "CREATE INDEX CONCURRENTLY ix ON accounts (n)": [],
        "ALTER TABLE accounts ADD COLUMN extra text": [READER, WRITER],
    }
    for sql, expected in cases.items():
        (facts,) = analyze(sql)
        found = conflicts_for(facts.locks, ROWS, SESSIONS, {})
        assert [c.pid for c in found] == expected, sql


def test_a_waiter_is_listed_after_the_holders() -> None:
    waiter = 103
    sessions = {**SESSIONS, waiter: session(waiter, xact_age_s=500.0)}
    rows = [*ROWS, row(waiter, ACCESS_EXCLUSIVE, granted=False, wait_age_s=3.5)]
    found = conflicts_for([RelationLock("accounts", SHARE)], rows, sessions, {})
    assert [(c.pid, c.granted) for c in found] == [(WRITER, True), (waiter, False)]
    w = found[1]
    assert w.mode == ACCESS_EXCLUSIVE and w.wait_age_s == 3.5
    assert "queue behind" in w.blocks
    assert "would wait" in found[0].blocks


def test_unknown_mode_counts_as_access_exclusive() -> None:
    assert effective_mode(UNKNOWN) == ACCESS_EXCLUSIVE
    found = conflicts_for([RelationLock("accounts", UNKNOWN)], ROWS, SESSIONS, {})
    assert [c.pid for c in found] == [READER, WRITER]
    assert {c.wants for c in found} == {UNKNOWN}
    # A relation the text does not name ("?"): nothing to match against.
    assert conflicts_for([RelationLock("?", UNKNOWN)], ROWS, SESSIONS, {}) == []


def test_schema_matching() -> None:
    other = 104
    rows = [*ROWS, row(other, ACCESS_SHARE, schema="audit", visible=False)]
    sessions = {**SESSIONS, other: session(other, xact_age_s=1.0)}

    def pids(relation: str, resolved: dict[str, str] | None = None) -> list[int | None]:
        locks = [RelationLock(relation, ACCESS_EXCLUSIVE)]
        return [c.pid for c in conflicts_for(locks, rows, sessions, {}, resolved=resolved)]

    assert pids("public.accounts") == [READER, WRITER]  # "public.x" == "x"
    assert pids("accounts") == [READER, WRITER]  # the one on the search path
    assert pids("audit.accounts") == [other]
    assert pids("nowhere.accounts") == []
    assert pids("other_table") == []
    # Resolved by the catalog (relation_sizes), an unqualified name means that schema.
    assert pids("accounts", resolved={"accounts": "audit.accounts"}) == [other]
    # Not on the search path anywhere: any schema's relation of that name.
    hidden = [row(other, ACCESS_SHARE, schema="audit", visible=False)]
    assert [r.pid for r in matching_rows("accounts", hidden)] == [other]
    assert split_relation("s.t") == ("s", "t") and split_relation("t") == (None, "t")


def test_one_entry_per_session_and_relation_with_the_strongest_mode() -> None:
    rows = [row(WRITER, ACCESS_SHARE), row(WRITER, ROW_EXCLUSIVE)]
    (c,) = conflicts_for([RelationLock("accounts", ACCESS_EXCLUSIVE)], rows, SESSIONS, {})
    assert c.mode == ROW_EXCLUSIVE and c.pid == WRITER
    # A statement locking two relations (FOREIGN KEY): one entry per relation.
    rows = [row(WRITER, ROW_EXCLUSIVE), row(WRITER, ROW_EXCLUSIVE, name="parent")]
    locks = [RelationLock("accounts", SHARE), RelationLock("parent", SHARE)]
    found = conflicts_for(locks, rows, SESSIONS, {})
    assert sorted(c.relation for c in found) == ["accounts", "parent"]


def test_order_granted_first_then_oldest_transaction() -> None:
    sessions = {
        1: session(1, xact_age_s=5.0),
        2: session(2, xact_age_s=99.0),
        3: session(3, xact_age_s=None),
        4: session(4, xact_age_s=1000.0),
    }
    rows = [
        row(1, ACCESS_SHARE),
        row(2, ACCESS_SHARE),
        row(3, ACCESS_SHARE),
        row(4, ACCESS_SHARE, granted=False),
    ]
    found = conflicts_for([RelationLock("accounts", ACCESS_EXCLUSIVE)], rows, sessions, {})
    assert [c.pid for c in found] == [2, 1, 3, 4]


def test_exclude_pids_origin_and_json_fields() -> None:
    found = conflicts_for(
        [RelationLock("accounts", ACCESS_EXCLUSIVE)],
        ROWS,
        SESSIONS,
        {WRITER: "app/orders.py:42 in pay"},
        exclude_pids={READER},
    )
    (c,) = found
    assert isinstance(c, Conflict)
    body = c.to_json()
    for key in ("pid", "backend_start", "mode", "granted", "state", "xact_age_s", "query"):
        assert key in body
    assert body["pid"] == WRITER and body["origin"] == "app/orders.py:42 in pay"
    assert body["mode"] == ROW_EXCLUSIVE and body["granted"] is True
    assert body["state"] == "idle in transaction" and body["xact_age_s"] == 20.0
    assert body["query"] == "UPDATE accounts SET n = 1"
    assert body["backend_start"] == (NOW - timedelta(hours=1)).isoformat()
    assert body["relation"] == "accounts" and body["wants"] == ACCESS_EXCLUSIVE


def test_hidden_query_unknown_session_and_prepared_transaction() -> None:
    hidden = session(5, xact_age_s=None, query=INSUFFICIENT_PRIVILEGE)
    rows = [row(5, ACCESS_SHARE), row(6, ACCESS_SHARE), row(None, ROW_EXCLUSIVE)]
    found = conflicts_for([RelationLock("accounts", ACCESS_EXCLUSIVE)], rows, {5: hidden}, {})
    by_pid = {c.pid: c for c in found}
    assert by_pid[5].query is None and by_pid[5].to_json()["query_note"]
    assert by_pid[6].query is None and by_pid[6].to_json()["seen"] is False
    assert by_pid[None].state == "prepared transaction" and by_pid[None].origin is None


def test_live_conflicts_read_the_snapshot_only() -> None:
    settings, privileges = ServerSettings(server_version_num=150000), Privileges()
    assert live_conflicts([RelationLock("accounts", SHARE)], None, {}) == []
    plain = assemble_snapshot([], {}, settings, privileges, taken_at=0.0, server_now=NOW)
    assert plain.relation_locks is None and not plain.covers_relations(["accounts"])
    assert live_conflicts([RelationLock("accounts", SHARE)], plain, {}) == []
    watched = assemble_snapshot(
        SESSIONS.values(),
        {},
        settings,
        privileges,
        taken_at=0.0,
        server_now=NOW,
        relation_locks=ROWS,
        watched_relnames={"accounts"},
    )
    assert watched.covers_relations(["public.accounts", "accounts", "?"])
    assert not watched.covers_relations(["accounts", "orders"])
    found = live_conflicts([RelationLock("accounts", SHARE)], watched, {})
    assert [c.pid for c in found] == [WRITER]


def test_relation_lock_rows_from_sampler_rows() -> None:
    base = {
        "pid": 9,
        "mode": ROW_EXCLUSIVE,
        "schema": "public",
        "name": "t",
        "regclass": "t",
        "relkind": "r",
        "visible": True,
    }
    snap = build_snapshot(
        [],
        ServerSettings(server_version_num=150000),
        Privileges(),
        taken_at=0,
        duration_ms=1,
        long_query_s=30,
        relation_lock_rows=[
            {**base, "granted": True, "wait_start": None},
            {**base, "pid": None, "granted": True, "wait_start": None},
            {**base, "pid": 10, "granted": False, "wait_start": datetime.now(UTC)},
        ],
        watched_relnames=["t"],
    )
    assert snap.relation_locks is not None
    held, prepared, waiting = snap.relation_locks
    assert held.pid == 9 and held.granted and held.wait_age_s is None
    assert prepared.pid is None
    assert waiting.pid == 10 and waiting.wait_age_s is not None and waiting.wait_age_s >= 0


def test_relation_size_json_and_resolution() -> None:
    known = RelationSize.from_row(
        {
            "name": "accounts",
            "schema": "public",
            "relname": "accounts",
            "relkind": "r",
            "rows_estimate": 1000,
            "bytes": 65536,
        }
    )
    body = known.to_json()
    assert (body["name"], body["rows_estimate"], body["bytes"]) == ("accounts", 1000, 65536)
    never = RelationSize("t", "s", "t", "r", None, 8192)
    assert never.to_json()["rows_estimate"] is None
    assert "unknown" in never.to_json()["rows_estimate_note"]
    assert resolved_names([known, never]) == {"accounts": "public.accounts", "t": "s.t"}


def test_origins_without_pools() -> None:
    assert origins_by_pid(None) == {}
    assert dict(origins_by_pid([])) == {}
