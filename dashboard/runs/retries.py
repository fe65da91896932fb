"""Lock retries, the pure part: which failures are worth another attempt, how long to back
off before it, and the count a run reports (`attempts`). No I/O: unit-tested without a
database. The I/O (savepoints, sleeping between attempts) is in `lock_retry.py`.

A statement that cannot get its lock within the per-attempt `lock_timeout`, or whose lock
wait the pile-up watchdog cancelled, or that lost a deadlock, is retried after a backoff
that doubles from 0.5 s up to 10 s, with jitter, up to `DASHBOARD_LOCK_RETRIES` attempts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.parser import ParseError

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout fired
QUERY_CANCELED = "57014"  # pg_cancel_backend (the watchdog's, a person's) or statement_timeout
DEADLOCK_DETECTED = "40P01"

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
JITTER = 0.25  # each backoff is drawn from ±25 % around its step

# Why an attempt ended: the words a log line and the final error use.
LOCK_TIMEOUT = "lock_timeout"
PILEUP = "pileup"
DEADLOCK = "deadlock"


def retry_reason(sqlstate: str | None, *, watchdog_cancelled: bool) -> str | None:
    """The reason a failed attempt may be retried, or None when it may not.

    A cancel is retried only when the pile-up watchdog sent it: a person's cancel request
    or a statement_timeout ends the run."""
    if sqlstate == LOCK_NOT_AVAILABLE:
        return LOCK_TIMEOUT
    if sqlstate == QUERY_CANCELED and watchdog_cancelled:
        return PILEUP
    if sqlstate == DEADLOCK_DETECTED:
        return DEADLOCK
    return None


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): 0.5, 1, 2, 4, 8,
    10, 10 … each within ±25 %, never above 10 s."""
    step = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempt - 1))
    r = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return round(min(BACKOFF_MAX_S, step * r), 3)


def describe_reason(reason: str, lock_timeout_ms: int) -> str:
    if reason == PILEUP:
        return "cancelled by the pile-up watchdog"
    if reason == DEADLOCK:
        return "lost a deadlock"
    return f"no lock within lock_timeout {lock_timeout_ms} ms"


@dataclass
class RetryLedger:
    """Attempts per statement (keyed by revision and statement) and for the whole run.

    `attempts` (what a run reports) is 1 for a run whose statements all got their locks at
    once, plus one for every retry."""

    limit: int
    retries: int = 0
    watchdog_cancels: int = 0
    lock_timeouts: int = 0
    deadlocks: int = 0
    waited_s: float = 0.0  # time spent in failed attempts and backoffs
    _per_key: dict[tuple[str | None, str], int] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        return 1 + self.retries

    def failed(self, key: tuple[str | None, str], reason: str) -> int:
        """Record a failed attempt of `key`; returns how many attempts it has used."""
        used = self._per_key.get(key, 0) + 1
        self._per_key[key] = used
        if reason == PILEUP:
            self.watchdog_cancels += 1
        elif reason == DEADLOCK:
            self.deadlocks += 1
        else:
            self.lock_timeouts += 1
        return used

    def exhausted(self, key: tuple[str | None, str]) -> bool:
        return self._per_key.get(key, 0) >= self.limit

    def is_last(self, key: tuple[str | None, str]) -> bool:
        """The attempt that just failed was `key`'s last one."""
        return self._per_key.get(key, 0) + 1 >= self.limit

    def retried(self) -> None:
        self.retries += 1

    def summary(self) -> dict[str, object]:
        return {
            "attempts": self.attempts,
            "limit": self.limit,
            "retries": self.retries,
            "lock_timeouts": self.lock_timeouts,
            "watchdog_cancels": self.watchdog_cancels,
            "deadlocks": self.deadlocks,
            "waited_s": round(self.waited_s, 3),
        }


def concurrent_build(sql: str) -> tuple[str | None, str] | None:
    """For a statement that builds an index concurrently (`CREATE INDEX CONCURRENTLY`,
    `REINDEX ... CONCURRENTLY`): (schema, name) of the index it leaves behind INVALID if it
    fails part-way, name "" when PostgreSQL picks it. None for any other statement. Read
    with pglast, PostgreSQL's own parser."""
    try:
        parsed = parse_sql(sql)
    except ParseError:
        return None
    for raw in parsed:
        node = raw.stmt
        if isinstance(node, ast.IndexStmt) and node.concurrent:
            schema = node.relation.schemaname if node.relation is not None else None
            return (schema or None, str(node.idxname or ""))
        if isinstance(node, ast.ReindexStmt):
            params = node.params or ()
            if any(isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in params):
                return (None, "")
    return None
