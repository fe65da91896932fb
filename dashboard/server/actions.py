"""Cancel / terminate a backend, safely.

The target is identified by (pid, backend_start). The identity and every eligibility rule
(same database, a client backend, not the dashboard's own connection) are checked by the
very statement that sends the signal, so a pid reused by a new backend between the page
render and the click is never signalled. The same statement returns what it checked, so
a refusal says exactly why.

Every attempt, refused or not, goes through `record_backend_signal()`: a log line and an
audit row (one function, one place).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.audit.log import AuditEvent, AuditLog, outcome_for_status
from dashboard.db import describe_error
from dashboard.server import queries as q
from dashboard.validation import InvalidText, clean_text

log = logging.getLogger("dashboard.actions")

ACTIONS = ("cancel", "terminate")
MAX_PID = 2**31 - 1
TERMINATE_WAIT_MS = 3000
# A backend_start is a real, recent start time. Anything outside these bounds (after UTC
# conversion) is refused before it reaches the driver, which cannot even encode years 1
# and 9999 shifted by their offsets (asyncpg raises DataError: a 503 instead of a 400).
EARLIEST_BACKEND_START = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)


class BadInput(ValueError):
    """The request names no valid target; nothing was signalled."""


def parse_pid(raw: object) -> int:
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit()):
        raise BadInput(f"pid must be a positive whole number, not {text[:40]!r}")
    pid = int(text)
    if pid <= 0 or pid > MAX_PID:
        raise BadInput(f"pid {pid} is out of range")
    return pid


def parse_backend_start(raw: object, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 timestamp with an offset, between 2000 and `now` (default: the clock)
    plus a day; BadInput naming backend_start otherwise."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise BadInput(
            "backend_start is required (the backend's start time, as shown by /api/locks), "
            "so that a reused pid is never signalled"
        )
    if not isinstance(raw, str):
        raise BadInput("backend_start must be an ISO 8601 timestamp string")
    try:  # fromisoformat() would ignore a trailing NUL: refuse control characters first
        clean_text(raw, "backend_start", max_len=64)
    except InvalidText as exc:
        raise BadInput(exc.message) from None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadInput(f"backend_start {raw[:60]!r} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        raise BadInput("backend_start must include a time zone offset (e.g. +00:00)")
    latest = (now or datetime.now(UTC)) + FUTURE_SLACK
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 or 9999 pushed past the calendar
        utc = None
    if utc is None or not EARLIEST_BACKEND_START <= utc <= latest:
        raise BadInput(
            f"backend_start {raw[:60]!r} is out of range: a backend's start time lies "
            f"between {EARLIEST_BACKEND_START:%Y-%m-%d} and now (use the value /api/locks shows)"
        )
    return value


@dataclass
class SignalOutcome:
    action: str
    pid: int | None
    backend_start: str | None
    ok: bool
    status_code: int
    outcome: str  # machine-readable: cancel_sent, terminated, stale, not_found, ...
    message: str  # one line a person can act on
    effective: bool = True  # False: signal sent but there was nothing for it to do
    target: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        if not self.ok:
            body["error"] = self.message
        return body


def refusal(
    action: str, pid: int | None, backend_start: str | None, status: int, outcome: str, msg: str
) -> SignalOutcome:
    return SignalOutcome(action, pid, backend_start, False, status, outcome, msg)


async def signal_backend(
    engine: AsyncEngine,
    action: str,
    pid: int,
    backend_start: datetime,
    *,
    terminate_wait_ms: int = TERMINATE_WAIT_MS,
) -> SignalOutcome:
    """Send the signal if, at that instant, pid still is the backend started at
    backend_start, in this database, a client backend, and not the dashboard's own."""
    if action not in ACTIONS:
        raise BadInput(f"unknown action {action!r}")
    bs_text = backend_start.isoformat()
    try:
        async with engine.connect() as conn:
            version = conn.dialect.server_version_info or (0,)
            params: dict[str, Any] = {"pid": pid, "backend_start": backend_start}
            if action == "cancel":
                sql = q.SIGNAL_CANCEL
            elif version >= (14,):
                sql, params["wait_ms"] = q.SIGNAL_TERMINATE, terminate_wait_ms
            else:
                sql = q.SIGNAL_TERMINATE_PRE14
            row = (await conn.execute(sql, params)).mappings().first()
            alive: bool | None = None
            if row is not None and row["signalled"] is False:
                res = await conn.execute(
                    q.BACKEND_ALIVE, {"pid": pid, "backend_start": backend_start}
                )
                alive = bool(res.scalar())
            await conn.commit()
    except DBAPIError as exc:
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code == "42501" or "permission denied" in str(exc).lower() or "must be" in str(exc):
            return refusal(
                action,
                pid,
                bs_text,
                403,
                "permission_denied",
                f"the dashboard's database role may not signal pid {pid}: {describe_error(exc)}",
            )
        return refusal(action, pid, bs_text, 503, "error", describe_error(exc))
    return interpret(action, pid, backend_start, row, alive)


def interpret(
    action: str,
    pid: int,
    backend_start: datetime,
    row: Any,
    alive: bool | None,
) -> SignalOutcome:
    """Turn the signalling statement's row into an outcome. Pure."""
    bs_text = backend_start.isoformat()
    if row is None:
        return refusal(
            action,
            pid,
            bs_text,
            404,
            "not_found",
            f"no backend with pid {pid} on this server (it may have exited); nothing was signalled",
        )
    target = {
        "user": row["usename"],
        "application_name": row["application_name"],
        "database": row["datname"],
        "backend_type": row["backend_type"],
        "state": row["state"],
        "backend_start": row["backend_start"].isoformat() if row["backend_start"] else None,
    }

    def no(status: int, outcome: str, msg: str) -> SignalOutcome:
        out = refusal(action, pid, bs_text, status, outcome, msg)
        out.target = target
        return out

    if row["backend_start"] is None:
        return no(
            403,
            "insufficient_privilege",
            f"the dashboard's role cannot see pid {pid}'s identity (insufficient privilege); "
            "nothing was signalled",
        )
    if not row["identity_ok"]:
        return no(
            409,
            "stale",
            f"pid {pid} now belongs to a backend started at {row['backend_start'].isoformat()}, "
            f"not {bs_text}: the session you saw is gone and the pid was reused. "
            "Nothing was signalled; refresh and check again.",
        )
    if not row["same_database"]:
        return no(
            403,
            "other_database",
            f"pid {pid} is connected to database {row['datname']!r}, not this dashboard's "
            "database; nothing was signalled",
        )
    if not row["client_backend"]:
        return no(
            403,
            "not_client_backend",
            f"pid {pid} is a {row['backend_type']}, not a client backend; the dashboard "
            "never signals server processes",
        )
    if row["dashboard_own"]:
        return no(
            403,
            "dashboard_own",
            f"pid {pid} is one of the dashboard's own connections; nothing was signalled",
        )
    state = row["state"] or "unknown"
    if row["signalled"]:
        if action == "cancel":
            effective = state in ("active", "fastpath function call")
            msg = f"cancel request sent to pid {pid}"
            if not effective:
                msg += f"; it was {state}, so there was no running query to cancel" + (
                    " (its transaction, and its locks, remain: terminate to end it)"
                    if state.startswith("idle in transaction")
                    else ""
                )
            out = SignalOutcome(action, pid, bs_text, True, 200, "cancel_sent", msg, effective)
        else:
            out = SignalOutcome(
                action,
                pid,
                bs_text,
                True,
                200,
                "terminated",
                f"pid {pid} terminated; its open transaction was rolled back",
            )
        out.target = target
        return out
    # The checks passed but the call returned false.
    if alive:
        if action == "terminate":
            out = SignalOutcome(
                action,
                pid,
                bs_text,
                True,
                202,
                "terminate_sent",
                f"terminate signal sent to pid {pid}; it has not exited yet",
            )
            out.target = target
            return out
        return no(409, "not_signalled", f"the server did not deliver the signal to pid {pid}")
    return no(
        404,
        "exited",
        f"pid {pid} exited before the signal was delivered; nothing left to do",
    )


@dataclass
class SignalAttempt:
    """Who tried what on which backend, and what happened: one audit record."""

    actor: str
    role: str
    address: str
    action: str
    pid: int | None
    backend_start: str | None
    outcome: str
    status_code: int
    message: str
    target: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


def signal_event(attempt: SignalAttempt) -> AuditEvent:
    """The audit row of one cancel/terminate attempt (pure)."""
    status = int(attempt.status_code)
    return AuditEvent(
        actor=attempt.actor,
        address=attempt.address,
        action=f"backend.{attempt.action}",
        outcome=outcome_for_status(status, str(attempt.outcome)),
        target=f"backend pid {attempt.pid}" if attempt.pid is not None else None,
        detail={
            "pid": attempt.pid,
            "backend_start": attempt.backend_start,
            "result": attempt.outcome,
            "status_code": status,
            "message": attempt.message,
            "role": attempt.role,
            "session": attempt.target or {},
        },
    )


async def record_backend_signal(audit: AuditLog | None, attempt: SignalAttempt) -> None:
    """The single place every cancel/terminate attempt is recorded: one structured log
    line, and an audit row when the dashboard has a database. Never raises."""
    try:
        level = logging.INFO if attempt.status_code < 400 else logging.WARNING
        log.log(
            level,
            "backend %s by %s (role %s, from %s): pid=%s backend_start=%s -> %s (%s): %s",
            attempt.action,
            attempt.actor,
            attempt.role,
            attempt.address or "?",
            attempt.pid,
            attempt.backend_start,
            attempt.outcome,
            attempt.status_code,
            attempt.message,
        )
        if audit is not None:
            await audit.record(signal_event(attempt))
    except Exception:
        log.exception("recording a backend signal attempt failed")
