"""Typed records of the review (pure data; DESIGN's `/api/review` field names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# pg_locks.mode names, weakest first.
ACCESS_SHARE = "AccessShareLock"
ROW_SHARE = "RowShareLock"
ROW_EXCLUSIVE = "RowExclusiveLock"
SHARE_UPDATE_EXCLUSIVE = "ShareUpdateExclusiveLock"
SHARE = "ShareLock"
SHARE_ROW_EXCLUSIVE = "ShareRowExclusiveLock"
EXCLUSIVE = "ExclusiveLock"
ACCESS_EXCLUSIVE = "AccessExclusiveLock"
LOCK_MODES = (
    ACCESS_SHARE,
    ROW_SHARE,
    ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    EXCLUSIVE,
    ACCESS_EXCLUSIVE,
)
UNKNOWN = "unknown"  # a statement pglast cannot parse: treated as AccessExclusiveLock for risk

SEVERITIES = ("none", "low", "medium", "high")


@dataclass(frozen=True)
class RelationLock:
    """One relation a statement locks, and the mode (a pg_locks.mode name, or "unknown")."""

    relation: str  # "schema.table" when the statement names the schema, else "table"
    mode: str

    def to_json(self) -> dict[str, str]:
        return {"relation": self.relation, "mode": self.mode}


@dataclass(frozen=True)
class StatementFacts:
    """What one SQL statement does to the relations it touches (static analysis)."""

    sql: str
    kind: str  # the pglast node name: "AlterTableStmt", "IndexStmt", ... ; "unparsed"
    locks: tuple[RelationLock, ...]
    rewrite: bool  # rewrites the table (new relfilenode)
    scan: bool  # reads the whole table while holding its lock (validation, NOT NULL, ...)
    transactional: bool  # may run inside a transaction block
    schema_change: bool  # DDL (not SELECT/INSERT/UPDATE/DELETE)
    creates: tuple[str, ...] = ()  # relations this statement creates
    parse_error: str | None = None
    node: Any = field(default=None, compare=False, repr=False)  # the pglast statement node

    @property
    def parsed(self) -> bool:
        return self.parse_error is None


@dataclass(frozen=True)
class PlanContext:
    """What a rule knows about the plan around a statement."""

    new_relations: frozenset[str] = frozenset()  # created earlier in the same plan
    in_transaction: bool = True  # the statement runs inside its revision's transaction


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # one of SEVERITIES
    message: str  # the reason, in plain words
    safer: str  # the safer way to do it

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "safer": self.safer,
        }


# --- what a plan sends: the captured statements (rehearsal or offline render) ---------------


@dataclass(frozen=True)
class CapturedStatement:
    """One statement a revision's migration function sends, in the order it is sent."""

    revision: str
    index: int  # position in the whole plan, 0-based
    sql: str
    fingerprint: str  # `statements.fingerprint(sql)`: literals normalised
    in_transaction: bool  # sent inside the revision's transaction (False: autocommit block)
    reads_rows: bool = False  # returned rows to the revision's Python code
    # Rehearsal only: the relation locks PostgreSQL granted for this statement that the
    # revision's transaction did not already hold (None: not observed, e.g. autocommit).
    observed_locks: tuple[RelationLock, ...] | None = None


@dataclass(frozen=True)
class RevisionCapture:
    """The statements one revision of the plan sends."""

    revision: str
    statements: tuple[CapturedStatement, ...]
    data_dependent: bool = False
    data_reason: str | None = None  # why its statements may depend on data
    source_file: str | None = None  # the revision's file (for waivers)


@dataclass(frozen=True)
class Capture:
    """Everything a plan sends, per revision, and how it was learned."""

    exact: bool  # True: recorded from a rehearsal by the same runner
    source: str  # "rehearsal" | "offline"
    revisions: tuple[RevisionCapture, ...]
    note: str | None = None  # why the capture is not exact (fallback reason)
    rehearsal_error: str | None = None  # the rehearsal's error, when it failed
    elapsed_ms: float = 0.0

    @property
    def statements(self) -> tuple[CapturedStatement, ...]:
        return tuple(s for r in self.revisions for s in r.statements)
