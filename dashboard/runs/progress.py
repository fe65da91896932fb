"""Live progress of the run executing in this process, and the one builder of log lines.

`LiveRun` is written by Alembic's hooks on the migration worker's thread and read by the
heartbeat on the serving loop; its log lines are handed over under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo

from dashboard.migrations.plan import Plan
from dashboard.review.gate import Refused
from dashboard.runs.ddl_progress import DdlProgress, DdlTracker, progress_fields
from dashboard.runs.pileup import WatchdogStats
from dashboard.runs.records import NewLogLine
from dashboard.runs.retries import RetryLedger


class RunCancelled(Exception):
    """Raised inside the migration to stop between statements after a cancel request."""


def now() -> datetime:
    return datetime.now(UTC)


def one_line(text: str, limit: int = 500) -> str:
    return " ".join(str(text).split())[:limit]


def log_line(
    run_id: int,
    event: str,
    message: str,
    *,
    revision: str | None = None,
    statement: str | None = None,
    duration_ms: float | None = None,
) -> NewLogLine:
    """The one builder of run log lines."""
    return NewLogLine(
        run_id=run_id,
        at=now(),
        event=event,
        message=message,
        revision=revision,
        statement=statement,
        duration_ms=duration_ms,
    )


@dataclass
class StepState:
    revision: str
    message: str
    state: str = "pending"
    duration_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "message": self.message,
            "state": self.state,
            "duration_ms": self.duration_ms,
        }


@dataclass
class LockWait:
    """What the migration backend waits for, sampled by the heartbeat."""

    wait_event: str | None
    waiting_for: list[dict[str, Any]]
    blockers: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "wait_event": self.wait_event,
            "waiting_for": self.waiting_for,
            "blockers": self.blockers,
        }

    def relation(self) -> str | None:
        waits = [w for w in self.waiting_for if w.get("relation")]
        return str(waits[0]["relation"]) if waits else None

    def mode(self) -> str | None:
        modes = [w["mode"] for w in self.waiting_for if w.get("mode")]
        return str(modes[0]) if modes else None

    def roots(self) -> list[dict[str, Any]]:
        """The sessions holding what the migration waits for (not waiters queued ahead of
        it); the direct blockers when the chain could not be followed."""
        roots = [b for b in self.blockers if b.get("root")]
        return roots or list(self.blockers)

    def queued_ahead(self) -> int:
        return sum(1 for b in self.blockers if b.get("root") is False)

    def phrase(self) -> str:
        """ ", blocked by pid 123 (idle in transaction, app web)" for log lines."""
        roots = self.roots()
        if not roots:
            return ""
        parts = []
        for b in roots[:2]:
            state = b.get("state") or "unknown state"
            app = b.get("application_name")
            parts.append(f"pid {b.get('pid')} ({state}{', ' + str(app) if app else ''})")
        more = f" and {len(roots) - 2} more" if len(roots) > 2 else ""
        ahead = self.queued_ahead()
        queued = f"; {ahead} waiting session(s) in between" if ahead else ""
        on = f" on {self.relation()}" if self.relation() else ""
        return f", blocked{on} by {', '.join(parts)}{more}{queued}"


@dataclass
class LiveRun:
    run_id: int
    plan: Plan
    requested_by: str
    started_mono: float = field(default_factory=time.monotonic)
    done: int = 0
    current_index: int | None = None
    current_revision: str | None = None
    in_revision: str | None = None  # set only while a revision's migration function runs
    refused: Refused | None = None  # a statement the gate refused (the run fails)
    step_started: float | None = None
    current_statement: str | None = None
    statement_started: float | None = None
    statements: int = 0
    steps: list[StepState] = field(default_factory=list)
    cancel_requested_by: str | None = None
    migrate_pid: int | None = None
    migrate_backend_start: datetime | None = None
    lock_wait: LockWait | None = None
    last_lock_wait: LockWait | None = None
    finished: bool = False
    # Lock retries and the pile-up watchdog (`lock_retry.py`, `watchdog.py`), all on the
    # migration worker's thread except the heartbeat's reads.
    retries: RetryLedger | None = None
    internal: bool = False  # the retrier's own statements (savepoints) are being sent
    attempt_seq: int = 0  # bumped for every statement attempt sent
    in_flight_since: float | None = None  # a statement attempt is at the server since
    attempt_started: float = 0.0  # when the last statement attempt was sent
    watchdog_cancelled: bool = False  # the watchdog cancelled the attempt in flight
    watchdog_reason: str | None = None
    backoff_until: float = 0.0  # monotonic end of the backoff in progress (0: none)
    exhausted: tuple[int, str] | None = None  # (attempts used, reason) when retries ran out
    watchdog: WatchdogStats | None = None
    # (revision, statement) of each statement that committed outside a transaction
    committed_outside: list[tuple[str, str]] = field(default_factory=list)
    # Long DDL (index builds, table rewrites) as pg_stat_progress_* report it
    ddl: DdlProgress | None = None
    ddl_tracker: DdlTracker = field(default_factory=DdlTracker)
    _pending: list[NewLogLine] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps = [StepState(s.revision, s.message) for s in self.plan.steps]
        self._index = {s.revision: i for i, s in enumerate(self.steps)}

    # -- log -----------------------------------------------------------------------------
    def log(
        self,
        event: str,
        message: str,
        *,
        revision: str | None = None,
        statement: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        line = log_line(
            self.run_id,
            event,
            message,
            revision=revision,
            statement=statement,
            duration_ms=duration_ms,
        )
        with self._lock:
            self._pending.append(line)

    def take_log(self) -> list[NewLogLine]:
        """The log lines not stored yet (each is handed out once)."""
        with self._lock:
            lines, self._pending = self._pending, []
        return lines

    def put_back(self, lines: list[NewLogLine]) -> None:
        """Lines that could not be stored go first in the next hand-over."""
        with self._lock:
            self._pending[:0] = lines

    def request_cancel(self, actor: str) -> bool:
        """Mark a cancel request; False when one was already noted."""
        if self.cancel_requested_by:
            return False
        self.cancel_requested_by = actor
        self.log("cancel_requested", f"cancel requested by {actor}")
        return True

    # -- hooks (on the migration worker's thread, inside run_sync) ---------------------
    def check_cancel(self) -> None:
        if self.cancel_requested_by:
            raise RunCancelled(f"cancelled by {self.cancel_requested_by}")

    def on_step_start(self, revision: str) -> None:
        self.check_cancel()
        idx = self._index.get(revision)
        self.current_index, self.current_revision = idx, revision
        self.in_revision = revision
        self.step_started = time.monotonic()
        if idx is not None:
            self.steps[idx].state = "running"

    def on_step_end(self, revision: str) -> None:
        self.in_revision = None

    def on_version_apply(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        rev = self.current_revision or step.up_revision_id
        dur = (time.monotonic() - self.step_started) * 1000 if self.step_started else None
        if self.current_index is not None:
            self.steps[self.current_index].state = "applied"
            self.steps[self.current_index].duration_ms = dur
        self.done += 1
        verb = "upgraded to" if step.is_upgrade else "downgraded"
        self.log(
            "revision_applied",
            f"{verb} {rev}; version table now {', '.join(sorted(heads)) or 'empty'}",
            revision=rev,
            duration_ms=dur,
        )

    def on_statement(self, statement: str) -> None:
        self.check_cancel()
        self.current_statement = statement
        self.statement_started = time.monotonic()
        self.statements += 1

    def blocker_phrase(self) -> str:
        sample = self.last_lock_wait
        return sample.phrase() if sample is not None else ""

    def mark_current_step(self, state: str) -> None:
        """A run that ends early marks the revision it was in (failed / cancelled)."""
        if self.current_index is not None and self.steps[self.current_index].state == "running":
            self.steps[self.current_index].state = state

    # -- view ----------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        t = time.monotonic()
        return {
            "total": len(self.plan.steps),
            "done": self.done,
            "current_index": self.current_index,
            "current_revision": self.current_revision,
            "current_statement": one_line(self.current_statement or "", 2000) or None,
            "statement_elapsed_s": round(t - self.statement_started, 3)
            if self.statement_started
            else None,
            "elapsed_s": round(t - self.started_mono, 3),
            "statements": self.statements,
            "steps": [s.to_json() for s in self.steps],
            "lock_wait": self.lock_wait.to_json() if self.lock_wait else None,
            "cancel_requested_by": self.cancel_requested_by,
            "attempts": self.retries.attempts if self.retries else 1,
            "retries": self.retries.summary() if self.retries else None,
            "watchdog": self.watchdog.to_json() if self.watchdog else None,
            "backoff_s": round(max(0.0, self.backoff_until - t), 3) if self.backoff_until else None,
            "live": not self.finished,
            **progress_fields(None if self.finished else self.ddl),
        }
