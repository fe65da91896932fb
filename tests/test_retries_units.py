"""Lock retries and the pile-up watchdog, the pure parts: what is retried, the backoff,
the count a run reports, when the watchdog cancels, and the blocker named (no database)."""

from __future__ import annotations

import random

from dashboard.runs.outcome import BlockerReport, RetriesExhausted
from dashboard.runs.pileup import PileupLimits, PileupReading, cancel_reason
from dashboard.runs.progress import LockWait
from dashboard.runs.retries import (
    DEADLOCK,
    LOCK_TIMEOUT,
    PILEUP,
    RetryLedger,
    backoff_s,
    concurrent_build,
    retry_reason,
)


def test_only_lock_failures_and_the_watchdogs_cancels_are_retried() -> None:
    assert retry_reason("55P03", watchdog_cancelled=False) == LOCK_TIMEOUT
    assert retry_reason("57014", watchdog_cancelled=True) == PILEUP
    assert retry_reason("40P01", watchdog_cancelled=False) == DEADLOCK
    # a person's cancel or a statement_timeout ends the run
    assert retry_reason("57014", watchdog_cancelled=False) is None
    assert retry_reason("23505", watchdog_cancelled=True) is None
    assert retry_reason(None, watchdog_cancelled=False) is None


def test_backoff_doubles_from_half_a_second_to_ten_with_jitter() -> None:
    rng = random.Random(7)
    steps = [0.5, 1, 2, 4, 8, 10, 10, 10]
    for attempt, step in enumerate(steps, start=1):
        for _ in range(50):
            d = backoff_s(attempt, rng)
            assert step * 0.75 - 1e-9 <= d <= min(10.0, step * 1.25) + 1e-9, (attempt, d)
    draws = {backoff_s(3, rng) for _ in range(20)}
    assert len(draws) > 1  # jittered: two runs do not retry in lockstep


def test_ledger_counts_attempts_per_statement_and_for_the_run() -> None:
    ledger = RetryLedger(limit=3)
    a, b = ("r1", "ALTER TABLE a ADD x int"), ("r1", "ALTER TABLE b ADD y int")
    assert ledger.attempts == 1
    assert ledger.failed(a, LOCK_TIMEOUT) == 1
    ledger.retried()
    assert ledger.failed(a, PILEUP) == 2
    ledger.retried()
    assert not ledger.exhausted(a) and ledger.is_last(a)
    assert ledger.failed(b, LOCK_TIMEOUT) == 1
    assert not ledger.exhausted(b)
    assert ledger.failed(a, LOCK_TIMEOUT) == 3
    assert ledger.exhausted(a)
    assert ledger.attempts == 3
    summary = ledger.summary()
    assert summary["lock_timeouts"] == 3 and summary["watchdog_cancels"] == 1


def test_concurrent_builds_are_recognised_with_pglast() -> None:
    assert concurrent_build("CREATE UNIQUE INDEX CONCURRENTLY ix ON s.t (a)") == ("s", "ix")
    assert concurrent_build('create index concurrently if not exists "Ix" on t (a)') == (
        None,
        "Ix",
    )
    assert concurrent_build("CREATE INDEX CONCURRENTLY ON t (a)") == (None, "")
    assert concurrent_build("REINDEX INDEX CONCURRENTLY ix") == (None, "")
    assert concurrent_build("CREATE INDEX ix ON t (a)") is None
    assert concurrent_build("REINDEX INDEX ix") is None
    assert concurrent_build("not sql at all") is None


def test_watchdog_cancels_only_a_waiting_migration_past_a_limit() -> None:
    limits = PileupLimits(max_waiters=5, max_wait_ms=1000)
    assert cancel_reason(PileupReading(False, 9, 9000), limits) is None
    assert cancel_reason(PileupReading(True, 0, 0), limits) is None
    assert cancel_reason(PileupReading(True, 4, 999), limits) is None
    many = cancel_reason(PileupReading(True, 5, 10), limits)
    assert many is not None and "5 session(s)" in many
    old = cancel_reason(PileupReading(True, 1, 1000), limits)
    assert old is not None and "1.0 s" in old


HOLDER = {"pid": 11, "state": "idle in transaction", "application_name": "web", "root": True}
AHEAD = {"pid": 22, "state": "active", "application_name": "cron", "root": False}


def test_the_root_is_named_and_waiters_ahead_are_only_counted() -> None:
    report = BlockerReport("orders", [AHEAD, HOLDER], "AccessExclusiveLock")
    assert "pid 11" in report.text and "pid 22" not in report.text
    assert "1 waiting session(s) in between" in report.text
    assert "AccessExclusiveLock on table orders" in report.text
    data = report.to_json()
    assert data["root_pids"] == [11] and data["locks_url"] == "/locks#root-11"
    wait = LockWait(
        "relation", [{"mode": "AccessExclusiveLock", "relation": "orders"}], [AHEAD, HOLDER]
    )
    assert wait.roots() == [HOLDER]
    assert "pid 11 (idle in transaction, web)" in wait.phrase()
    assert "1 waiting session(s) in between" in wait.phrase()


def test_exhausted_retries_say_how_each_attempt_ended() -> None:
    text = RetriesExhausted(
        5, PILEUP, 3000, {"lock_timeouts": 2, "watchdog_cancels": 3, "waited_s": 21.5}
    ).text
    assert "in 5 attempt(s) over 21.5 s" in text
    assert "2 timed out after lock_timeout 3000 ms" in text
    assert "pile-up watchdog cancelled 3" in text
