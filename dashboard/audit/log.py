"""The one audit writer.

`AuditLog.write(event, conn)` appends a row inside the caller's open transaction (a
decision and its audit row commit together) and raises on failure. `AuditLog.record(event)`
is for everything else (logins, backend signals, refused requests): its own transaction,
never raises, gives up after `RECORD_TIMEOUT_S`, logs the failure and returns False.

Every row written while an HTTP request is handled is counted in `audit_marks`, so the
audit middleware adds a generic refusal row only when nothing else recorded one.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.audit.repo import insert_row

if TYPE_CHECKING:
    from dashboard.state.store import StateStore

log = logging.getLogger(__name__)

RECORD_TIMEOUT_S = 3.0

# Set by the audit middleware for the duration of one HTTP request: the id of every audit
# row written while handling it is appended here.
audit_marks: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "dashboard_audit_marks", default=None
)


def outcome_for_status(status_code: int, ok_outcome: str) -> str:
    """`denied` for 401/403, `refused` for any other 4xx/5xx, else the action's own."""
    if status_code in (401, 403):
        return "denied"
    if status_code >= 400:
        return "refused"
    return ok_outcome


def _jsonable(value: object) -> object:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def json_safe(detail: Mapping[str, object]) -> dict[str, Any]:
    """`detail` as plain JSON values: datetimes become ISO 8601, anything unknown a string."""
    safe: dict[str, Any] = json.loads(json.dumps(dict(detail), default=_jsonable))
    return safe


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    action: str
    outcome: str
    target: str | None = None
    address: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


class AuditLog:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def write(self, event: AuditEvent, conn: AsyncConnection) -> int:
        """Insert inside the caller's open transaction (conn from store.begin()); raises on
        failure; counts the id in audit_marks."""
        new_id = await insert_row(
            conn,
            actor=event.actor or "anonymous",
            action=event.action,
            outcome=event.outcome,
            target=event.target,
            address=event.address or None,
            detail=json_safe(event.detail),
        )
        marks = audit_marks.get()
        if marks is not None:
            marks.append(new_id)
        return new_id

    async def record(self, event: AuditEvent) -> bool:
        """Own transaction; never raises, times out after 3 s, logs the failure, returns
        False when not written (no database, database down)."""
        try:
            await asyncio.wait_for(self._write_alone(event), RECORD_TIMEOUT_S)
        except Exception:
            log.exception(
                "could not write audit row: %s %s by %s from %s",
                event.action,
                event.outcome,
                event.actor,
                event.address,
            )
            return False
        return True

    async def _write_alone(self, event: AuditEvent) -> int:
        await self.store.ensure()
        async with self.store.begin() as conn:
            return await self.write(event, conn)
