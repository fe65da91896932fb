"""Typed records of the runs area, as the repository returns them (frozen: a record is
what the database said at one moment; a change is a new transition, not a mutation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Self, TypeVar

# A JSONB document as stored (plan, progress, error detail): plain JSON values.
JsonDoc = dict[str, Any]


T = TypeVar("T")


def _from_mapping(cls: type[T], row: Mapping[str, Any]) -> T:
    return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Run:
    id: int
    target: str
    direction: str
    target_spec: str
    to_rev: str
    to_revs: list[str]
    from_revs: list[str]
    plan: JsonDoc
    sql_sha256: str
    status: str
    requested_by: str
    requested_from: str | None
    approved_by: str | None
    approved_at: datetime | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    owner: str | None
    lock_pid: int | None
    lock_backend_start: datetime | None
    migrate_pid: int | None
    migrate_backend_start: datetime | None
    cancel_requested_by: str | None
    cancel_requested_at: datetime | None
    progress: JsonDoc
    error: str | None
    error_detail: JsonDoc | None
    verified_revs: list[str] | None
    verified_at: datetime | None
    sql: str | None
    expires_at: datetime | None
    review: JsonDoc | None  # the statement pins shown at request (review.pins)
    attempts: int | None = None  # lock attempts used (NULL before the run reports them)
    # what the run left behind that needs a person: SchemaWarning.to_json() dicts
    warnings: list[JsonDoc] | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return _from_mapping(cls, row)

    def with_changes(self, **changes: Any) -> Run:
        return replace(self, **changes)


@dataclass(frozen=True)
class StaleRun:
    """A queued or running run and how long its owner has been silent."""

    run: Run
    stale_s: float | None


@dataclass(frozen=True)
class Approval:
    """The one decision on a run (append-only)."""

    id: int
    run_id: int
    decision: str
    approver: str
    approver_role: str | None
    approver_address: str | None
    decided_at: datetime
    reason: str | None
    sql_sha256: str
    file_sha256: list[dict[str, str]]
    current_heads: list[str]
    expires_at: datetime | None
    statements: JsonDoc | None  # the statement pins approved (review.pins)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return _from_mapping(cls, row)


@dataclass(frozen=True)
class LogEntry:
    """One line of a run's log. `id` is its sequence number (`?after=` on the log API)."""

    id: int
    run_id: int
    at: datetime
    event: str
    revision: str | None
    message: str
    statement: str | None
    duration_ms: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return _from_mapping(cls, row)


@dataclass(frozen=True)
class NewLogLine:
    """A log line not written yet (the one builder of log rows: `progress.log_line`)."""

    run_id: int
    at: datetime
    event: str
    message: str
    revision: str | None = None
    statement: str | None = None
    duration_ms: float | None = None

    def values(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
