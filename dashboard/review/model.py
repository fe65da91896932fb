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
