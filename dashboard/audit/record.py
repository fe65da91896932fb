"""Writing audit rows: one function that never fails the caller, and the hooks other
areas call (`dash.extras["audit_hook"]` for login/logout, and
`dash.extras["record_backend_signal"]` for cancel/terminate attempts)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger(__name__)

RECORD_TIMEOUT_S = 3.0


def outcome_for_status(status_code: int, ok_outcome: str) -> str:
    """`denied` for 401/403, `refused` for any other 4xx/5xx, else the action's own."""
    if status_code in (401, 403):
        return "denied"
    if status_code >= 400:
        return "refused"
    return ok_outcome


async def record(
    dash: Any,
    *,
    actor: str,
    action: str,
    outcome: str,
    target: str | None = None,
    address: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Append one audit row. Never raises and never waits long: returns False when the
    row could not be written (no database, database down), after logging it."""
    store = getattr(dash, "state", None)
    if store is None:
        return False
    try:
        await asyncio.wait_for(
            store.record_audit(
                actor=actor or "anonymous",
                action=action,
                outcome=outcome,
                target=target,
                address=address or None,
                detail=json.loads(json.dumps(detail or {}, default=str)),
            ),
            RECORD_TIMEOUT_S,
        )
        return True
    except Exception:
        log.exception(
            "could not write audit row: %s %s by %s from %s", action, outcome, actor, address
        )
        return False


def install(dash: Any) -> None:
    """Wire the audit hooks other areas call into the state store's audit table."""

    async def audit_hook(
        *,
        actor: str,
        address: str | None,
        action: str,
        target: str | None,
        outcome: str,
        detail: dict[str, Any] | None,
    ) -> None:
        await record(
            dash,
            actor=actor,
            action=action,
            outcome=outcome,
            target=target,
            address=address,
            detail=detail,
        )

    async def backend_signal(attempt: Any) -> None:
        status = int(attempt.status_code)
        await record(
            dash,
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

    dash.extras["audit_hook"] = audit_hook
    dash.extras["record_backend_signal"] = backend_signal
