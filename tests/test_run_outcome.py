"""The pure parts of runs: how a run ended, the table a statement touched, what a reader
sees of an expired request, the run page's folded log and revision window. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard.migrations.apply import DatabaseMoved
from dashboard.migrations.plan import Plan, PlanStep
from dashboard.runs.outcome import (
    BlockerReport,
    FinishFacts,
    decide_finish,
    describe_failure,
    expiry_message,
    interrupted_message,
    is_lock_timeout,
    relation_of,
)
from dashboard.runs.progress import LiveRun, RunCancelled
from dashboard.runs.records import Run
from dashboard.runs.views import effective, fold_log, group_log, run_json, step_window
from tests.records_support import a_run

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


class FakeSqlstateError(Exception):
    """Stands in for a driver exception: only its `sqlstate` attribute is read."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Wrapped(Exception):
    """Shaped like SQLAlchemy's DBAPIError: `.orig` (whose cause is the driver's error)
    and `.statement`."""

    def __init__(self, orig: Exception, statement: str) -> None:
        super().__init__(f"(sqlalchemy.dialects.x.Error) <class 'asyncpg.X'>: {orig}")
        self.orig = orig
        self.statement = statement


def lock_timeout(statement: str = "ALTER TABLE orders ADD COLUMN x int") -> Wrapped:
    inner = Exception("driver wrapper")
    inner.__cause__ = FakeSqlstateError("canceling statement due to lock timeout", "55P03")
    return Wrapped(inner, statement)


def facts(**kw: Any) -> FinishFacts:
    base: dict[str, Any] = {
        "error": None,
        "expected": ["b2"],
        "confirm_value": "b2",
        "verified": ["b2"],
        "verify_error": None,
        "left_in_transaction": False,
        "cancel_requested_by": None,
        "current_revision": "b2",
        "current_statement": None,
    }
    base.update(kw)
    return FinishFacts(**base)


@pytest.mark.parametrize(
    ("sql", "relation"),
    [
        ("ALTER TABLE ONLY public.orders ADD COLUMN x int", "public.orders"),
        ("alter table orders alter column n type bigint", "orders"),
        ("CREATE INDEX CONCURRENTLY ix ON shop.items (sku)", "shop.items"),
        ("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE", "accounts"),
        ("DROP TABLE IF EXISTS legacy.old_things, other", "legacy.old_things"),
        ("UPDATE widgets SET n = 1 WHERE id > 5", "widgets"),
        ("INSERT INTO audit.events (a) VALUES (1)", "audit.events"),
        ("DELETE FROM t WHERE false", "t"),
        ("TRUNCATE big_table", "big_table"),
        # quoted as to_regclass() reads it back (the blocker lookup passes it there)
        ('ALTER TABLE "Mixed Case" ADD COLUMN y int', '"Mixed Case"'),
        ("SELECT 1", None),
        ("this is not sql", None),
        (None, None),
        ("", None),
    ],
)
def test_relation_of_reads_sql_with_postgres_parser(sql: str | None, relation: str | None) -> None:
    assert relation_of(sql) == relation


def test_describe_failure_strips_driver_noise_and_finds_sqlstate() -> None:
    failure = describe_failure(lock_timeout())
    assert failure.sqlstate == "55P03"
    assert failure.type == "FakeSqlstateError"
    assert failure.server_error == "canceling statement due to lock timeout"
    assert failure.statement == "ALTER TABLE orders ADD COLUMN x int"
    plain = describe_failure(ValueError("first line\nsecond line"))
    assert (plain.type, plain.sqlstate, plain.server_error, plain.statement) == (
        "ValueError",
        None,
        "first line",
        None,
    )
    assert is_lock_timeout(lock_timeout()) and not is_lock_timeout(ValueError("x"))
    assert not is_lock_timeout(None)


def test_finish_success_needs_the_proof_of_commit() -> None:
    ok = decide_finish(facts())
    assert (ok.status, ok.detail) == ("succeeded", {})
    assert ok.message == "database now at b2, confirmed on a fresh connection"
    trap = decide_finish(facts(verified=["a1"], left_in_transaction=True))
    assert trap.status == "failed"
    assert "reads a1, not b2" in trap.message and "never committed" in trap.message
    assert trap.detail == {"expected": ["b2"], "verified": ["a1"], "left_in_transaction": True}
    unreadable = decide_finish(facts(verified=None, verify_error="connection refused"))
    assert unreadable.status == "failed"
    assert "could not be re-read on a fresh connection (connection refused)" in unreadable.message


def test_finish_failure_names_revision_statement_and_blocker() -> None:
    blocker = BlockerReport(
        "public.orders",
        [{"pid": 42, "state": "idle in transaction", "application_name": "shop", "query": "BEGIN"}],
    )
    fin = decide_finish(
        facts(error=lock_timeout(), verified=["a1"], current_revision="b2", blocker=blocker)
    )
    assert fin.status == "failed"
    assert fin.message.startswith("revision b2 failed: canceling statement due to lock timeout")
    assert "while running: ALTER TABLE orders ADD COLUMN x int" in fin.message
    assert "Lock wait on table public.orders; blocked by backend pid 42" in fin.message
    assert "(idle in transaction, shop): BEGIN" in fin.message
    assert fin.message.endswith("Database left at a1 (verified on a fresh connection)")
    assert fin.detail["lock"]["blockers"][0]["pid"] == 42
    assert fin.detail["sqlstate"] == "55P03" and fin.detail["revision"] == "b2"
    moved = decide_finish(
        facts(error=DatabaseMoved("reads x"), verified=[], current_statement="SELECT 1")
    )
    assert moved.detail["statement"] is None and "base (nothing applied)" in moved.message
    # a statement the driver did not report comes from the live progress
    live = decide_finish(facts(error=ValueError("boom"), current_statement="UPDATE t SET a = 1"))
    assert live.detail["statement"] == "UPDATE t SET a = 1"


def test_finish_cancelled() -> None:
    fin = decide_finish(
        facts(error=RunCancelled("cancelled by carol"), cancel_requested_by="carol", verified=[])
    )
    assert fin.status == "cancelled"
    assert fin.message == (
        "cancelled by carol during revision b2; database left at base (nothing applied) "
        "(verified on a fresh connection)"
    )


def test_expiry_and_interruption_messages() -> None:
    when = datetime(2026, 11, 29, 3, 30, tzinfo=UTC)
    assert expiry_message(None, when, 30).startswith(
        "request expired: not approved within 30 min (by 2026-11-29 03:30:00 UTC)"
    )
    assert expiry_message("bob", when, 30).startswith(
        "approval expired: approved by bob but not executed within 30 min"
    )
    stopped = interrupted_message("host:1", ["a1"], True)
    assert stopped == (
        "interrupted: the dashboard process running it (host:1) stopped reporting and its lock "
        "connection is gone: the process stopped, or lost its connection to the database; "
        "database verified at a1; its orphaned migration backend was terminated"
    )
    restart = interrupted_message("host:1", [], False, when)
    assert restart.startswith(
        "interrupted: the database server restarted at 2026-11-29 03:30:00 UTC while the run "
        "was in progress, cutting its connections (run by host:1)"
    )
    assert restart.endswith("database verified at base (nothing applied)")


def test_a_lost_connection_is_said_as_such() -> None:
    cut = Wrapped(OSError("connection was closed in the middle of operation"), "SELECT 1")
    fin = decide_finish(facts(error=cut, verified=["a1"], current_statement="SELECT pg_sleep(20)"))
    assert fin.status == "failed" and fin.detail["connection_lost"] is True
    assert fin.message.startswith("the connection to the database was lost during revision b2")
    assert "kept running" in fin.message and "stopped" not in fin.message
    assert fin.message.endswith("Database left at a1 (verified on a fresh connection)")
    unproven = decide_finish(facts(error=ValueError("x"), verified=None, verify_error="refused"))
    assert "could not be confirmed" in unproven.message and "(refused)" in unproven.message
    assert "verified on a fresh connection" not in unproven.message


def due_run(**kw: Any) -> Run:
    return a_run(
        id=3,
        to_rev="b2",
        to_revs=["b2"],
        from_revs=["a1"],
        plan={"steps": [{"revision": "b2", "message": "m"}]},
        **kw,
    )


def test_reading_a_due_request_shows_it_expired_without_writing() -> None:
    due = due_run(expires_at=NOW - timedelta(seconds=1))
    seen = effective(due, NOW, 30)
    assert seen.status == "expired" and seen.error is not None
    assert seen.error.startswith("request expired")
    assert due.status == "awaiting_approval"  # the record itself is unchanged (frozen)
    assert effective(due_run(expires_at=NOW + timedelta(minutes=1)), NOW, 30).status == (
        "awaiting_approval"
    )
    body = run_json(seen, None, now=NOW)
    assert (body["status"], body["approval_state"]) == ("expired", "expired")
    assert body["progress"] == {"total": 1, "done": 0}


def test_log_folds_per_revision_and_long_plans_show_a_window() -> None:
    lines: list[dict[str, Any]] = [
        {"seq": 1, "revision": None, "event": "started"},
        {"seq": 2, "revision": "r1", "event": "revision_applied"},
        {"seq": 3, "revision": "r1", "event": "note"},
        {"seq": 4, "revision": "r2", "event": "revision_applied"},
        {"seq": 5, "revision": None, "event": "succeeded"},
    ]
    groups = group_log(lines)
    assert [(g.revision, [e["seq"] for e in g.entries]) for g in groups] == [
        (None, [1]),
        ("r1", [2, 3]),
        ("r2", [4]),
        (None, [5]),
    ]
    folded = fold_log(lines, open_revisions=1)
    assert [g.revision for g in folded.head] == [None]
    assert [g.revision for g in folded.earlier] == ["r1"]
    assert (folded.earlier_revisions, folded.earlier_lines) == (1, 2)
    assert [[e["seq"] for e in g.entries] for g in folded.recent] == [[4], [5]]
    assert fold_log(lines).earlier == []  # short logs are not folded
    short = [{"revision": f"r{i}", "state": "applied"} for i in range(10)]
    assert step_window(short, None)["rows"] == list(enumerate(short))
    long = [
        {"revision": f"r{i}", "state": "applied" if i < 2000 else "pending"} for i in range(3000)
    ]
    w = step_window(long, 2000)
    assert [i for i, _ in w["rows"]] == list(range(1995, 2006))
    assert (w["before"], w["before_applied"], w["after"]) == (1995, 1995, 2994 - 2000)
    finished = step_window([{**s, "state": "applied"} for s in long], None)
    assert finished["after"] == 0 and finished["rows"][-1][0] == 2999


def test_live_run_hands_each_log_line_over_once() -> None:
    plan = Plan(
        direction="upgrade",
        target="heads",
        from_heads=("a1",),
        to_heads=("b2",),
        steps=(
            PlanStep(
                revision="b2",
                down_revisions=("a1",),
                message="m",
                is_upgrade=True,
                is_merge_point=False,
                is_branch_point=False,
                irreversible=False,
                irreversible_reason=None,
                file="b2.py",
                file_sha256="e" * 64,
            ),
        ),
    )
    live = LiveRun(run_id=3, plan=plan, requested_by="carol")
    live.log("started", "go")
    first = live.take_log()
    assert [x.event for x in first] == ["started"] and live.take_log() == []
    live.log("later", "x")
    live.put_back(first)
    assert [x.event for x in live.take_log()] == ["started", "later"]
    assert live.request_cancel("dave") and not live.request_cancel("erin")
    with pytest.raises(RunCancelled):
        live.on_step_start("b2")
    assert live.progress()["cancel_requested_by"] == "dave"
