"""PostgreSQL's table-level lock modes: which conflicts with which, and which is strongest.

The conflict table is the one of PostgreSQL's "Explicit Locking" chapter (13.3.1,
"Conflicting Lock Modes"); it is symmetric. `UNKNOWN` (a statement that could not be
analysed) conflicts with every mode, itself included, and ranks above AccessExclusiveLock:
it may be anything up to it. Other names that can appear in `pg_locks.mode` but never block
a table lock (`SIReadLock`, predicate locks of serializable transactions) conflict with
nothing.

Also the small vocabulary the statement handlers share: `Effects` (what one statement
locks and costs), relation names as written, and a walk over pglast's AST.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pglast import ast

from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    EXCLUSIVE,
    LOCK_MODES,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    UNKNOWN,
)


def _table() -> dict[str, frozenset[str]]:
    # Each mode with the modes it conflicts with, as the PostgreSQL docs list them.
    listed = {
        ACCESS_SHARE: {ACCESS_EXCLUSIVE},
        ROW_SHARE: {EXCLUSIVE, ACCESS_EXCLUSIVE},
        ROW_EXCLUSIVE: {SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE},
        SHARE_UPDATE_EXCLUSIVE: {
            SHARE_UPDATE_EXCLUSIVE,
            SHARE,
            SHARE_ROW_EXCLUSIVE,
            EXCLUSIVE,
            ACCESS_EXCLUSIVE,
        },
        SHARE: {
            ROW_EXCLUSIVE,
            SHARE_UPDATE_EXCLUSIVE,
            SHARE_ROW_EXCLUSIVE,
            EXCLUSIVE,
            ACCESS_EXCLUSIVE,
        },
        SHARE_ROW_EXCLUSIVE: {
            ROW_EXCLUSIVE,
            SHARE_UPDATE_EXCLUSIVE,
            SHARE,
            SHARE_ROW_EXCLUSIVE,
            EXCLUSIVE,
            ACCESS_EXCLUSIVE,
        },
        EXCLUSIVE: {
            ROW_SHARE,
            ROW_EXCLUSIVE,
            SHARE_UPDATE_EXCLUSIVE,
            SHARE,
            SHARE_ROW_EXCLUSIVE,
            EXCLUSIVE,
            ACCESS_EXCLUSIVE,
        },
        ACCESS_EXCLUSIVE: set(LOCK_MODES),
    }
    return {mode: frozenset(others) for mode, others in listed.items()}


CONFLICTS: Mapping[str, frozenset[str]] = MappingProxyType(_table())

# Strength order: PostgreSQL's own numbering (AccessShareLock = 1 ... AccessExclusiveLock = 8).
_RANK: Mapping[str, int] = MappingProxyType(
    {**{mode: i for i, mode in enumerate(LOCK_MODES, start=1)}, UNKNOWN: len(LOCK_MODES) + 1}
)


def conflicts(a: str, b: str) -> bool:
    """Whether a lock in mode `a` and one in mode `b` on the same relation conflict."""
    if a == UNKNOWN or b == UNKNOWN:
        return True
    held = CONFLICTS.get(a)
    return held is not None and b in held


def strongest(modes: Iterable[str]) -> str:
    """The strongest of `modes` in PostgreSQL's numbering (`UNKNOWN` above all).

    Raises ValueError when `modes` is empty or names no lock mode."""
    best: str | None = None
    for mode in modes:
        if mode not in _RANK:
            raise ValueError(f"not a table lock mode: {mode!r}")
        if best is None or _RANK[mode] > _RANK[best]:
            best = mode
    if best is None:
        raise ValueError("strongest() of no lock modes")
    return best


def mode_from_number(number: int) -> str:
    """The pg_locks name of a lock mode given as PostgreSQL's number (LOCK TABLE's node)."""
    if 1 <= number <= len(LOCK_MODES):
        return LOCK_MODES[number - 1]
    return UNKNOWN


@dataclass
class Effects:
    """Locks (relation -> mode, first one is the statement's own table) and costs."""

    locks: list[tuple[str, str]] = field(default_factory=list)
    rewrite: bool = False
    scan: bool = False
    transactional: bool = True

    def lock(self, relation: str, mode: str) -> None:
        self.locks.append((relation, mode))


def rel_name(rv: Any) -> str:
    """A RangeVar's name as written: "schema.table" when qualified, else "table".

    The parser already folds unquoted identifiers to lower case and keeps quoted ones."""
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def nodes(node: Any) -> Iterator[Any]:
    """Every AST node under `node` (itself included), depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(item)
        elif isinstance(item, ast.Node):
            yield item
            for member in item:
                value = getattr(item, member)
                if isinstance(value, tuple | ast.Node):
                    stack.append(value)


def dotted(names: Any) -> str:
    """The name in a tuple of String nodes: "schema.name" or "name" (a database part of
    catalog.schema.name is dropped)."""
    return ".".join(n.sval for n in names[-2:])


UNKNOWN_RELATION = "?"


def _classes(names: str) -> tuple[type, ...]:
    return tuple(getattr(ast, name) for name in names.split())


# Statements that read or write rows but change no schema (StatementFacts.schema_change).
DATA_STATEMENTS = _classes(
    """
    SelectStmt InsertStmt UpdateStmt DeleteStmt MergeStmt CopyStmt LockStmt ExplainStmt
    VariableSetStmt VariableShowStmt NotifyStmt ListenStmt UnlistenStmt DiscardStmt
    PrepareStmt DeallocateStmt CheckPointStmt
    """
)
# Statements known to lock no table (types, functions, roles, grants, settings, ...).
LOCKLESS_STATEMENTS = _classes(
    """
    CreateFunctionStmt AlterFunctionStmt CreateEnumStmt AlterEnumStmt CompositeTypeStmt
    CreateRangeStmt CreateDomainStmt DefineStmt AlterTypeStmt CreateExtensionStmt
    AlterExtensionStmt GrantStmt GrantRoleStmt CreateRoleStmt AlterRoleStmt AlterRoleSetStmt
    DropRoleStmt AlterDefaultPrivilegesStmt AlterOwnerStmt CreateCastStmt CreatePLangStmt
    CreateConversionStmt AlterDatabaseSetStmt VariableSetStmt VariableShowStmt NotifyStmt
    ListenStmt UnlistenStmt DiscardStmt PrepareStmt DeallocateStmt CheckPointStmt
    """
)
# Lockless and refused inside a transaction block.
NON_TRANSACTIONAL_STATEMENTS = _classes(
    """
    CreatedbStmt DropdbStmt AlterSystemStmt CreateTableSpaceStmt DropTableSpaceStmt
    """
)
