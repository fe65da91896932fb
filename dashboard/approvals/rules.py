"""Approval rules, pure: no I/O, no clock of their own (`now` is always passed in).

A run that needs approval waits in `awaiting_approval` until a different person with the
approver role approves it (or rejects it, with a reason). The approval is *pinned* to what
the approver saw: the plan's SQL SHA-256, the SHA-256 of every revision file in the plan,
and the database's heads. When the requester or the approver executes it, all three are
recomputed; any difference voids the approval. A request waiting for approval, and an
approval waiting to be executed, expire after `DASHBOARD_APPROVAL_TTL_MINUTES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dashboard.auth.roles import at_least

# FilePin (revision, file, sha256) is defined with the revision files it pins; the
# functions here only compare pins, they never read a file.
from dashboard.migrations.revisions import FilePin as FilePin
from dashboard.runs.records import Approval, Run
from dashboard.state import model as sm
from dashboard.validation import InvalidText, clean_text

MAX_REASON = 1000

# approval_state values shown with a run
PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
VOID = "void"
EXPIRED = "expired"
NOT_REQUIRED = "not_required"
NONE = "none"


# -- decisions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    """Why an action is refused: an HTTP status, a stable code and a sentence for people."""

    status_code: int
    code: str
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFacts:
    """What the rules need to know about a run and its decision (if any)."""

    id: int
    status: str
    requested_by: str
    approved_by: str | None = None
    approved_at: datetime | None = None
    expires_at: datetime | None = None
    decision: str | None = None  # "approve" | "reject" | None
    decided_by: str | None = None

    @classmethod
    def of(cls, run: Run, approval: Approval | None) -> RunFacts:
        return cls(
            id=run.id,
            status=run.status,
            requested_by=run.requested_by,
            approved_by=run.approved_by,
            approved_at=run.approved_at,
            expires_at=run.expires_at,
            decision=approval.decision if approval else None,
            decided_by=approval.approver if approval else None,
        )


def needs_approval(require_approval: bool, direction: str) -> bool:
    """The four-eyes rule: upgrades when DASHBOARD_REQUIRE_APPROVAL is on; downgrades always."""
    return direction == "downgrade" or require_approval


def deadline(start: datetime, ttl_minutes: int) -> datetime:
    return start + timedelta(minutes=ttl_minutes)


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and now >= expires_at


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value else "?"


def _not_open(run: RunFacts, verb: str) -> Refusal:
    """Refusal for a run that is no longer waiting for a decision or for execution."""
    s = run.status
    if s == sm.EXPIRED:
        return Refusal(
            409,
            "expired",
            f"run {run.id} expired (not decided or not executed in time); request it again",
            {"status": s},
        )
    if s == sm.REJECTED:
        return Refusal(
            409,
            "rejected",
            f"run {run.id} was rejected by {run.decided_by or 'an approver'}; it cannot be {verb}",
            {"status": s},
        )
    if s in (sm.QUEUED, sm.RUNNING):
        return Refusal(
            409, "started", f"run {run.id} has already been started ({s})", {"status": s}
        )
    return Refusal(
        409, "state", f"run {run.id} is {s}; it cannot be {verb} any more", {"status": s}
    )


def _self_refusal(run: RunFacts, actor: str, what: str) -> Refusal:
    return Refusal(
        403,
        "self_approval",
        f"{actor} requested run {run.id}; a different person with the approver role must "
        f"{what} it (self-approval is off: DASHBOARD_ALLOW_SELF_APPROVAL)",
    )


def check_approve(run: RunFacts, actor: str, *, allow_self: bool, now: datetime) -> Refusal | None:
    if run.status != sm.AWAITING_APPROVAL:
        return _not_open(run, "approved")
    if run.decision == sm.APPROVE or run.approved_by:
        who = run.approved_by or run.decided_by
        return Refusal(
            409,
            "already_approved",
            f"run {run.id} is already approved by {who} at {_when(run.approved_at)}; "
            "it needs no second approval",
            {"approved_by": who},
        )
    if is_expired(run.expires_at, now):
        return Refusal(
            409,
            "expired",
            f"the request for run {run.id} expired at {_when(run.expires_at)} without an "
            "approval; request it again",
        )
    if actor == run.requested_by and not allow_self:
        return _self_refusal(run, actor, "approve")
    return None


def validate_reason(reason: object, *, required: bool) -> tuple[str | None, Refusal | None]:
    """A reason: text, trimmed, at most MAX_REASON characters, lines and tabs but no other
    control character (`clean_text`, like every text field); required for a rejection."""
    try:
        text = clean_text(reason, "reason", max_len=MAX_REASON, required=required, multiline=True)
    except InvalidText as exc:
        if exc.kind == "required":
            return None, Refusal(
                400, "reason_required", "a reason is required to reject a run (reason: text)"
            )
        code = "reason_too_long" if exc.kind == "too_long" else "invalid"
        return None, Refusal(400, code, exc.message, {"field": exc.field})
    return text, None


def check_reject(run: RunFacts, actor: str, *, allow_self: bool, now: datetime) -> Refusal | None:
    if run.status != sm.AWAITING_APPROVAL:
        return _not_open(run, "rejected")
    if run.decision == sm.APPROVE or run.approved_by:
        return Refusal(
            409,
            "already_approved",
            f"run {run.id} is already approved by {run.approved_by or run.decided_by}; to stop "
            "it, cancel the run",
        )
    if is_expired(run.expires_at, now):
        return Refusal(
            409,
            "expired",
            f"the request for run {run.id} already expired at {_when(run.expires_at)}",
        )
    if actor == run.requested_by and not allow_self:
        return Refusal(
            403,
            "self_approval",
            f"{actor} requested run {run.id}; to withdraw your own request, cancel it",
        )
    return None


def check_execute(run: RunFacts, actor: str, *, now: datetime) -> Refusal | None:
    if run.status != sm.AWAITING_APPROVAL:
        return _not_open(run, "executed")
    if run.decision != sm.APPROVE or not run.approved_by:
        return Refusal(
            409,
            "not_approved",
            f"run {run.id} has not been approved yet: a second person with the approver role "
            "must approve it first",
        )
    if actor not in (run.requested_by, run.approved_by):
        return Refusal(
            403,
            "not_participant",
            f"only the requester ({run.requested_by}) or the approver ({run.approved_by}) "
            f"can start run {run.id}",
        )
    if is_expired(run.expires_at, now):
        return Refusal(
            409,
            "expired",
            f"the approval of run {run.id} by {run.approved_by} expired at "
            f"{_when(run.expires_at)}; request it again",
        )
    return None


def allowed_actions(
    run: RunFacts, actor: str | None, role: str, *, allow_self: bool, now: datetime
) -> dict[str, bool]:
    """What the page offers this person. The server checks again on every action."""
    if actor is None:
        return {"approve": False, "reject": False, "execute": False, "cancel": False}
    return {
        "approve": at_least(role, "approver")
        and check_approve(run, actor, allow_self=allow_self, now=now) is None,
        "reject": at_least(role, "approver")
        and check_reject(run, actor, allow_self=allow_self, now=now) is None,
        "execute": at_least(role, "operator") and check_execute(run, actor, now=now) is None,
        "cancel": at_least(role, "operator")
        and run.status in (sm.AWAITING_APPROVAL, sm.QUEUED, sm.RUNNING),
    }


def approval_state(run: Run, approval: Approval | None) -> str:
    status = run.status
    detail = run.error_detail or {}
    if approval is not None and approval.decision == sm.REJECT:
        return REJECTED
    if isinstance(detail, dict) and detail.get("approval_void"):
        return VOID
    if status == sm.EXPIRED:
        return EXPIRED
    if approval is not None:
        return APPROVED
    if status == sm.AWAITING_APPROVAL:
        return PENDING
    if run.queued_at is not None:
        return NOT_REQUIRED
    return NONE


# -- pins ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pins:
    sql_sha256: str  # "" when the SQL could not be rendered
    files: tuple[FilePin, ...]
    heads: tuple[str, ...]  # sorted
    sql_error: str | None = None

    @classmethod
    def make(
        cls,
        sql_sha256: str,
        files: Iterable[FilePin],
        heads: Iterable[str],
        sql_error: str | None = None,
    ) -> Pins:
        return cls(sql_sha256, tuple(files), tuple(sorted(heads)), sql_error)

    @classmethod
    def of_request(cls, run: Run) -> Pins:
        """What the requester saw: the run's SQL hash, plan file hashes and `from` heads."""
        steps = (run.plan or {}).get("steps") or []
        return cls.make(
            run.sql_sha256,
            (
                FilePin(s["revision"], s.get("file") or "", s.get("file_sha256") or "")
                for s in steps
            ),
            run.from_revs or [],
        )

    @classmethod
    def of_approval(cls, approval: Approval) -> Pins:
        return cls.make(
            approval.sql_sha256,
            (
                FilePin(f["revision"], f.get("file") or "", f.get("sha256") or "")
                for f in approval.file_sha256
            ),
            approval.current_heads or [],
        )

    def files_json(self) -> list[dict[str, str]]:
        return [f.to_json() for f in self.files]


@dataclass(frozen=True)
class PinChange:
    what: str  # "heads" | "file" | "sql" | "statements"
    message: str
    before: str | list[str]
    after: str | list[str]
    revision: str | None = None
    file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "message": self.message,
            "before": self.before,
            "after": self.after,
            "revision": self.revision,
            "file": self.file,
        }


def _label(heads: Sequence[str]) -> str:
    return ", ".join(heads) if heads else "base (nothing applied)"


def _short(sha: str) -> str:
    return sha[:12] + "…" if sha else "none"


def compare_pins(pinned: Pins, now: Pins, *, when: str = "approved") -> list[PinChange]:
    """Every difference between what was pinned and what is true now; [] when identical."""
    changes: list[PinChange] = []
    if pinned.heads != now.heads:
        changes.append(
            PinChange(
                "heads",
                f"the database moved: it was at {_label(pinned.heads)} when {when}, "
                f"it is now at {_label(now.heads)}",
                list(pinned.heads),
                list(now.heads),
            )
        )
    current = {f.revision: f for f in now.files}
    for f in pinned.files:
        cur = current.get(f.revision)
        after = cur.sha256 if cur else ""
        if after == f.sha256:
            continue
        name = f.file or f.revision
        if not after:
            msg = f"revision file {name} ({f.revision}) is gone or unreadable"
        else:
            msg = (
                f"revision file {name} ({f.revision}) changed: SHA-256 {_short(f.sha256)} when "
                f"{when}, {_short(after)} now"
            )
        changes.append(PinChange("file", msg, f.sha256, after, f.revision, name))
    if pinned.sql_sha256 != now.sql_sha256:
        if not now.sql_sha256:
            msg = f"the plan's SQL can no longer be rendered ({now.sql_error or 'unknown error'})"
        else:
            msg = (
                f"the plan's SQL changed: SHA-256 {_short(pinned.sql_sha256)} when {when}, "
                f"{_short(now.sql_sha256)} now"
            )
        changes.append(PinChange("sql", msg, pinned.sql_sha256, now.sql_sha256))
    return changes


def _brief(change: PinChange) -> str:
    if change.what == "heads":
        before = change.before if isinstance(change.before, list) else [change.before]
        after = change.after if isinstance(change.after, list) else [change.after]
        return f"the database moved (from {_label(before)} to {_label(after)})"
    if change.what == "file":
        verb = "is gone" if not change.after else "changed"
        return f"revision file {change.file or change.revision} {verb}"
    return "the plan's SQL " + ("changed" if change.after else "can no longer be rendered")


def void_message(changes: Sequence[PinChange], *, when: str = "approved") -> str:
    """One line naming what changed (the details are in each change's message)."""
    head = "approval void" if when == "approved" else "request out of date"
    return (
        f"{head}: {'; '.join(_brief(c) for c in changes)} since it was {when}. "
        "Nothing ran; request the run again."
    )
