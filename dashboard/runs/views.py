"""Runs as the API shows them (DESIGN's field names), built from typed records.

Pure: no I/O. `effective()` is how a read shows a request that is past its deadline
(expired) without writing anything; the sweeper records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dashboard.approvals.rules import approval_state, is_expired
from dashboard.runs.outcome import expiry_message
from dashboard.runs.records import Approval, LogEntry, Run
from dashboard.state import model as sm

# How many log lines the run page shows at first; older ones are one click away.
PAGE_LOG_LINES = 300


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def effective(run: Run, now: datetime, ttl_minutes: int) -> Run:
    """The run as a reader should see it: a waiting run past its deadline is expired."""
    if run.status == sm.AWAITING_APPROVAL and is_expired(run.expires_at, now):
        assert run.expires_at is not None
        return run.with_changes(
            status=sm.EXPIRED,
            error=expiry_message(run.approved_by, run.expires_at, ttl_minutes),
            finished_at=run.expires_at,
        )
    return run


def approval_json(approval: Approval | None) -> dict[str, Any] | None:
    """The decision on a run as the API shows it (None while nobody has decided)."""
    if approval is None:
        return None
    return {
        "decision": approval.decision,
        "by": approval.approver,
        "role": approval.approver_role,
        "from": approval.approver_address,
        "at": iso(approval.decided_at),
        "reason": approval.reason,
        "sql_sha256": approval.sql_sha256,
        "file_sha256": approval.file_sha256,
        "current_heads": approval.current_heads,
        "expires_at": iso(approval.expires_at),
        "acknowledgements": (approval.statements or {}).get("acknowledgements") or [],
    }


def log_json(entry: LogEntry) -> dict[str, Any]:
    return {
        "seq": entry.id,
        "at": iso(entry.at),
        "event": entry.event,
        "revision": entry.revision,
        "message": entry.message,
        "statement": entry.statement,
        "duration_ms": entry.duration_ms,
    }


@dataclass(frozen=True)
class LogGroup:
    """Consecutive log lines of one revision (None: lines about the run as a whole)."""

    revision: str | None
    entries: list[dict[str, Any]]


@dataclass(frozen=True)
class FoldedLog:
    """A run's log for its page: the opening lines (request, start), the older revisions
    folded away, the last revisions' lines shown."""

    head: list[LogGroup]
    earlier: list[LogGroup]
    recent: list[LogGroup]

    @property
    def earlier_revisions(self) -> int:
        return sum(1 for g in self.earlier if g.revision is not None)

    @property
    def earlier_lines(self) -> int:
        return sum(len(g.entries) for g in self.earlier)


# The last this-many revisions' lines stay unfolded on the run page.
OPEN_REVISIONS = 3


def group_log(entries: Sequence[dict[str, Any]]) -> list[LogGroup]:
    """Consecutive lines grouped by revision."""
    groups: list[LogGroup] = []
    for e in entries:
        rev = e.get("revision")
        if groups and groups[-1].revision == rev:
            groups[-1].entries.append(e)
        else:
            groups.append(LogGroup(rev, [e]))
    return groups


def fold_log(entries: Sequence[dict[str, Any]], open_revisions: int = OPEN_REVISIONS) -> FoldedLog:
    """Fold a long log per revision: all but the last `open_revisions` revisions' lines
    are folded; the lines before the first revision (request, start) stay in view."""
    groups = group_log(entries)
    first_rev = next((i for i, g in enumerate(groups) if g.revision is not None), len(groups))
    head, rest = groups[:first_rev], groups[first_rev:]
    revs = [i for i, g in enumerate(rest) if g.revision is not None]
    cut = revs[-open_revisions] if len(revs) > open_revisions else 0
    return FoldedLog(head=head, earlier=rest[:cut], recent=rest[cut:])


# A plan longer than this shows a window of its revisions around the current one.
STEP_WINDOW_MAX = 60
STEP_WINDOW_AROUND = 5


def step_window(steps: Sequence[dict[str, Any]], current: int | None) -> dict[str, Any]:
    """The revisions a run page shows: all of a short plan; for a long one the last few
    applied, the current one and the next few, with how many are folded on each side."""
    rows = list(enumerate(steps))
    if len(rows) <= STEP_WINDOW_MAX:
        return {"rows": rows, "before": 0, "before_applied": 0, "after": 0}
    if current is None:
        applied = sum(1 for s in steps if s.get("state") == "applied")
        current = applied if applied < len(steps) else len(steps) - 1
    lo = max(0, current - STEP_WINDOW_AROUND)
    hi = min(len(rows), current + STEP_WINDOW_AROUND + 1)
    return {
        "rows": rows[lo:hi],
        "before": lo,
        "before_applied": sum(1 for s in steps[:lo] if s.get("state") == "applied"),
        "after": len(rows) - hi,
    }


def run_attempts(run: Run, live_progress: dict[str, Any] | None) -> int:
    """Lock attempts used: the live count while the run reports one, else the stored."""
    live = (live_progress or {}).get("attempts")
    if isinstance(live, int) and not isinstance(live, bool):
        return live
    return run.attempts or 0


def run_json(
    run: Run,
    approval: Approval | None,
    *,
    now: datetime,
    live_progress: dict[str, Any] | None = None,
    log: Sequence[LogEntry] | None = None,
) -> dict[str, Any]:
    progress = dict(live_progress if live_progress is not None else run.progress or {})
    plan = run.plan or {}
    if "total" not in progress:
        progress["total"] = len(plan.get("steps", []))
        progress.setdefault("done", 0)
    if run.status == sm.RUNNING and live_progress is None and run.started_at:
        progress["elapsed_s"] = round((now - run.started_at).total_seconds(), 3)
    warnings = list(run.warnings or [])
    data: dict[str, Any] = {
        "id": run.id,
        "status": run.status,
        "direction": run.direction,
        "target": run.target_spec,
        "from": run.from_revs,
        "to": run.to_revs,
        "to_rev": run.to_rev,
        "requested_by": run.requested_by,
        "requested_from": run.requested_from,
        "approved_by": run.approved_by,
        "approved_at": iso(run.approved_at),
        "sql_sha256": run.sql_sha256,
        "created_at": iso(run.created_at),
        "queued_at": iso(run.queued_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "heartbeat_at": iso(run.heartbeat_at),
        "owner": run.owner,
        "cancel_requested_by": run.cancel_requested_by,
        "error": run.error,
        "error_detail": run.error_detail,
        "verified_revs": run.verified_revs,
        "verified_at": iso(run.verified_at),
        "progress": progress,
        "plan": plan,
        "duration_s": round((run.finished_at - run.started_at).total_seconds(), 3)
        if run.finished_at and run.started_at
        else None,
        "expires_at": iso(run.expires_at),
        "irreversible": list(plan.get("irreversible") or []),
        "approval_state": approval_state(run, approval),
        "approval": approval_json(approval),
        # the statement fingerprints the run may send (per revision) and the
        # acknowledgements given: the approval's pins, or the request's without approval
        "statement_pins": (approval.statements if approval and approval.statements else None)
        or run.review,
        "attempts": run_attempts(run, live_progress),
        "warnings": warnings,
        # succeeded and left nothing that needs a person
        "clean": run.status == sm.SUCCEEDED and not warnings,
    }
    if log is not None:
        data["log"] = [log_json(e) for e in log]
    return data
