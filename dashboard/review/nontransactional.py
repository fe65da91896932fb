"""What a plan's steps outside a transaction would leave behind if they failed (pure).

A statement that runs outside a transaction (Alembic's `autocommit_block()`: CREATE INDEX
CONCURRENTLY, ALTER TYPE ... ADD VALUE, ...) cannot be rolled back with its revision. For
each revision that has such statements, `non_transactional_steps()` lists them and says in
plain words what a failure half-way through them leaves, and what of the revision is and is
not undone:

- Alembic commits the revision's transaction when an autocommit block starts, so the
  revision's transactional statements *before* the block stay applied;
- each statement in the block commits on its own as soon as it finishes;
- the statements *after* the block run in a new transaction, rolled back if one fails;
- the version table is only updated at the end of the revision, in its last transaction:
  after a failure it still names the revision the database was at before.

Objects are named from the statement's pglast node (`IndexStmt.idxname`,
`AlterEnumStmt.typeName`, ...), never by matching text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast
from pglast.enums import ObjectType, ReindexObjectType

from dashboard.review.lock_table import DATA_STATEMENTS
from dashboard.review.locks import _statements as split_statements
from dashboard.review.model import CapturedStatement
from dashboard.review.sql_names import dotted, qualified, range_var

__all__ = ["NonTransactionalStep", "OutsideStatement", "leaves_of", "non_transactional_steps"]

SQL_LIMIT = 120  # how much of a statement a generic sentence quotes


@dataclass(frozen=True)
class OutsideStatement:
    """One statement that runs outside a transaction: its place in the plan and its SQL."""

    index: int  # position in the whole plan, 0-based (as in the review's statements)
    sql: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "sql": self.sql}


@dataclass(frozen=True)
class NonTransactionalStep:
    """One revision's statements outside a transaction and what a failure would leave."""

    revision: str
    statements: tuple[OutsideStatement, ...]
    leaves: tuple[str, ...]  # one sentence per object a failure would leave, in plan order
    note: str  # what of the revision is and is not undone
    committed_before: tuple[int, ...] = ()  # its transactional statements committed first
    rolled_back_after: tuple[int, ...] = ()  # its transactional statements after the last block

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "statements": [s.to_json() for s in self.statements],
            "leaves": list(self.leaves),
            "note": self.note,
            "committed_before": list(self.committed_before),
            "rolled_back_after": list(self.rolled_back_after),
        }


# --- naming ---------------------------------------------------------------------------------


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _one_line(text: str, limit: int = SQL_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _or(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


# --- what one statement leaves --------------------------------------------------------------


def _create_index(node: ast.IndexStmt) -> str:
    table = range_var(node.relation)
    causes = ["a lock timeout while it waits for old transactions"]
    if node.unique:
        causes.append("a duplicate for UNIQUE")
    causes.append("a cancel")
    if node.idxname:
        schema = node.relation.schemaname if node.relation is not None else None
        index = qualified(schema, node.idxname)
        what = f"CREATE {'UNIQUE ' if node.unique else ''}INDEX CONCURRENTLY {index} ON {table}"
        left = f"an INVALID index {index} that is not used by queries but slows writes"
        if node.if_not_exists:
            retry = (
                "IF NOT EXISTS will then silently skip it (the run looks fine, the index "
                "stays INVALID)"
            )
        else:
            retry = f'a retry then fails with "relation {node.idxname} already exists"'
        fix = (
            f"drop it (DROP INDEX CONCURRENTLY {index}) and retry. Between its own lock "
            "attempts the runner does this itself; when its attempts run out the index "
            "stays and the run reports it"
        )
    else:
        what = f"CREATE {'UNIQUE ' if node.unique else ''}INDEX CONCURRENTLY ON {table}"
        left = (
            f"an INVALID index on {table} under a name PostgreSQL chose (pg_index.indisvalid "
            "= false), not used by queries but slowing writes"
        )
        retry = "a retry builds a second index beside it"
        fix = "find it, drop it (DROP INDEX CONCURRENTLY) and retry"
    return f"{what}: if it fails ({_or(causes)}) it leaves {left}; {retry}: {fix}"


def _drop_index(node: ast.DropStmt) -> str:
    names = ", ".join(dotted(o) for o in node.objects or () if isinstance(o, tuple))
    return (
        f"DROP INDEX CONCURRENTLY {names}: if it fails half-way (a lock timeout while it "
        "waits for old transactions, a cancel) the index may be left INVALID: no longer "
        "used by queries but still there, and possibly still updated on writes; run "
        f"DROP INDEX CONCURRENTLY IF EXISTS {names} again to finish it"
    )


def _reindex(node: ast.ReindexStmt) -> str:
    if node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX and node.relation is not None:
        rv = node.relation
        what = f"REINDEX INDEX CONCURRENTLY {range_var(rv)}"
        copy = qualified(rv.schemaname, f"{rv.relname or ''}_ccnew")
        left = (
            f"an INVALID copy {copy} beside the original (which stays in use); the copy "
            f"slows writes: drop it (DROP INDEX CONCURRENTLY {copy}) and retry"
        )
    else:
        target = range_var(node.relation) if node.relation is not None else (node.name or "")
        what = f"REINDEX CONCURRENTLY {target}".rstrip()
        left = (
            "INVALID copies named <index>_ccnew beside the original indexes (which stay in "
            "use); they slow writes: drop each of them (DROP INDEX CONCURRENTLY) and retry"
        )
    return (
        f"{what}: if it fails (a lock timeout while it waits for old transactions, a "
        f"duplicate in a UNIQUE index, a cancel) it leaves {left}; an INVALID index named "
        "_ccold is the old one, already replaced: just drop it"
    )


def _alter_enum(node: ast.AlterEnumStmt, recorded: str) -> str:
    enum = dotted(node.typeName or ())
    if node.oldVal:
        return (
            f"ALTER TYPE {enum} RENAME VALUE {_literal(node.oldVal)} TO "
            f"{_literal(node.newVal or '')}: once it has run the rename stays, {recorded}; a "
            f"retry then fails because {_literal(node.oldVal)} no longer exists"
        )
    value = _literal(node.newVal or "")
    if node.skipIfNewValExists:
        retry = "IF NOT EXISTS lets a retry skip it"
    else:
        retry = (
            f'a retry fails with "enum label {node.newVal} already exists" unless the '
            "statement says IF NOT EXISTS"
        )
    return (
        f"ALTER TYPE {enum} ADD VALUE {value}: the new enum value {value} stays in {enum} "
        f"even though {recorded} (PostgreSQL cannot drop an enum value; only rebuilding the "
        f"type removes it); {retry}"
    )


def _generic(node: ast.Node, sql: str) -> str:
    quoted = _one_line(sql)
    if isinstance(node, ast.VacuumStmt):
        return f"{quoted}: changes no data; a failure leaves nothing to undo"
    if isinstance(node, DATA_STATEMENTS):
        return (
            f"{quoted}: the rows it changed are committed at once; a failure after it does "
            "not undo them, and a retry runs it again"
        )
    return (
        f"{quoted}: commits on its own as soon as it finishes; a failure after it does not "
        "undo it, and a retry runs it again (it must be safe to repeat)"
    )


def leaves_of(sql: str, *, recorded: str = "the revision is not recorded as applied") -> list[str]:
    """What a failure of one statement run outside a transaction would leave, one sentence
    per statement in `sql` (a part the parser cannot read: a sentence saying so).
    `recorded` says where the version table stands meanwhile (used for enum values)."""
    out: list[str] = []
    for text, node, _error in split_statements(sql):
        if node is None:
            out.append(
                f"{_one_line(text)}: the SQL parser cannot read it, so what a failure leaves "
                "is unknown; whatever it did before failing is committed and nothing rolls "
                "it back"
            )
        elif isinstance(node, ast.TransactionStmt):
            continue
        elif isinstance(node, ast.IndexStmt) and _index_operation(node):
            out.append(_create_index(node))
        elif isinstance(node, ast.DropStmt) and _index_operation(node):
            out.append(_drop_index(node))
        elif isinstance(node, ast.ReindexStmt) and _index_operation(node):
            out.append(_reindex(node))
        elif isinstance(node, ast.AlterEnumStmt):
            out.append(_alter_enum(node, recorded))
        else:
            out.append(_generic(node, text))
    return out


# --- per revision ---------------------------------------------------------------------------


def _numbers(indexes: Sequence[int]) -> str:
    """Plan positions as the page shows them: 1-based, "#3", "#3, #4 and #6"."""
    shown = [f"#{i + 1}" for i in indexes]
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _statements(n: int) -> str:
    return "statement" if n == 1 else "statements"


def _note(
    revision: str,
    statements: Sequence[CapturedStatement],
    *,
    direction: str,
    invalid_index: bool,
) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """What of the revision is and is not undone when a step outside a transaction fails;
    and its transactional statements committed before a block, and those after the last."""
    outside = [i for i, s in enumerate(statements) if not s.in_transaction]
    first, last = outside[0], outside[-1]
    before = tuple(s.index for s in statements[:first] if s.in_transaction)
    between = tuple(s.index for s in statements[first:last] if s.in_transaction)
    after = tuple(s.index for s in statements[last + 1 :] if s.in_transaction)
    block = "the first autocommit block" if between else "the autocommit block"
    parts: list[str] = []
    if before:
        one = len(before) == 1
        parts.append(
            f"{_statements(len(before)).capitalize()} {_numbers(before)} of this revision "
            f"{'runs' if one else 'run'} in its transaction before {block}; Alembic commits "
            f"that transaction when the block starts, so {'it stays' if one else 'they stay'} "
            "applied even if a step outside the transaction fails."
        )
    if len(outside) == 1:
        parts.append(
            "The statement outside a transaction commits on its own: no rollback undoes "
            "what it did."
        )
    else:
        parts.append(
            f"The {len(outside)} statements outside a transaction each commit on their own "
            "as soon as they finish: if one fails, the ones before it stay done."
        )
    if between:
        one = len(between) == 1
        parts.append(
            f"{_statements(len(between)).capitalize()} {_numbers(between)} between the "
            f"blocks {'runs' if one else 'run'} in a transaction of {'its' if one else 'their'} "
            "own, committed when the next block starts."
        )
    if after:
        one = len(after) == 1
        parts.append(
            f"{_statements(len(after)).capitalize()} {_numbers(after)} after the "
            f"{'last ' if between else ''}block {'runs' if one else 'run'} in a new "
            "transaction, rolled back "
            + ("if it fails." if one else "together if one of them fails.")
        )
    if direction == "downgrade":
        where = f"still names {revision}: the downgrade is not recorded"
    else:
        where = f"still names the revision before {revision}: {revision} is not recorded as applied"
    parts.append(
        "The version table is only updated at the end of the revision, in its last "
        f"transaction: after a failure anywhere it {where}, though part of its work is in "
        "place. Running it again repeats the whole revision, so each of its statements "
        "must be safe to repeat (IF NOT EXISTS, IF EXISTS)"
        + (", and an INVALID index left behind must be dropped first." if invalid_index else ".")
    )
    return " ".join(parts), before + between, after


def _index_operation(node: ast.Node) -> bool:
    """A CONCURRENTLY index build, drop or rebuild: a failure may leave an INVALID index."""
    if isinstance(node, ast.IndexStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.DropStmt):
        return bool(node.concurrent) and node.removeType == ObjectType.OBJECT_INDEX
    if isinstance(node, ast.ReindexStmt):
        return any(
            isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
        )
    return False


def _may_leave_invalid_index(sql: str) -> bool:
    return any(
        node is not None and _index_operation(node) for _t, node, _e in split_statements(sql)
    )


def non_transactional_steps(
    statements: Sequence[CapturedStatement], *, direction: str = "upgrade"
) -> tuple[NonTransactionalStep, ...]:
    """For each revision (in plan order) that sends statements outside a transaction: those
    statements, what a failure would leave, and what of the revision is and is not undone."""
    by_revision: dict[str, list[CapturedStatement]] = {}
    for s in statements:
        by_revision.setdefault(s.revision, []).append(s)
    recorded_as = (
        "the downgrade is not recorded (the revision still counts as applied)"
        if direction == "downgrade"
        else "the revision is not recorded as applied"
    )
    out: list[NonTransactionalStep] = []
    for revision, mine in by_revision.items():
        outside = [s for s in mine if not s.in_transaction]
        if not outside:
            continue
        leaves = [line for s in outside for line in leaves_of(s.sql, recorded=recorded_as)]
        note, committed, rolled_back = _note(
            revision,
            mine,
            direction=direction,
            invalid_index=any(_may_leave_invalid_index(s.sql) for s in outside),
        )
        out.append(
            NonTransactionalStep(
                revision=revision,
                statements=tuple(OutsideStatement(s.index, s.sql) for s in outside),
                leaves=tuple(leaves),
                note=note,
                committed_before=committed,
                rolled_back_after=rolled_back,
            )
        )
    return tuple(out)
