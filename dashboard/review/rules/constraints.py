"""Constraint rules: add constraints without a long validation or index build under lock."""

from __future__ import annotations

from pglast import ast, enums

from dashboard.review.model import Finding, PlanContext, StatementFacts
from dashboard.review.rules.base import (
    BaseRule,
    alter_table,
    column_constraints,
    is_new,
    register,
    relation_name,
    statement_node,
)

_FK = enums.ConstrType.CONSTR_FOREIGN
_CHECK = enums.ConstrType.CONSTR_CHECK
_UNIQUE = enums.ConstrType.CONSTR_UNIQUE
_PRIMARY = enums.ConstrType.CONSTR_PRIMARY


def _added_constraints(node: ast.Node | None) -> tuple[str, list[ast.Constraint]] | None:
    """The table and the table constraints of `ALTER TABLE ... ADD CONSTRAINT ...`."""
    found = alter_table(node)
    if found is None:
        return None
    table, cmds = found
    out = [
        c.def_
        for c in cmds
        if c.subtype == enums.AlterTableType.AT_AddConstraint and isinstance(c.def_, ast.Constraint)
    ]
    return table, out


def _added_columns(node: ast.Node | None) -> tuple[str, list[ast.ColumnDef]] | None:
    found = alter_table(node)
    if found is None:
        return None
    table, cmds = found
    out = [
        c.def_
        for c in cmds
        if c.subtype == enums.AlterTableType.AT_AddColumn and isinstance(c.def_, ast.ColumnDef)
    ]
    return table, out


def _label(c: ast.Constraint) -> str:
    return f"constraint {c.conname}" if c.conname else "a constraint"


@register
class ConstraintMissingNotValid(BaseRule):
    id = "constraint-missing-not-valid"
    severity = "high"
    reason = (
        "Adding a CHECK or FOREIGN KEY constraint without NOT VALID checks every existing "
        "row while holding the lock: AccessExclusiveLock for a CHECK (reads and writes "
        "wait), ShareRowExclusiveLock on both tables for a foreign key (writes wait)."
    )
    safer = (
        "Add it with NOT VALID (quick; new rows are checked from then on), then in a later "
        "transaction run ALTER TABLE ... VALIDATE CONSTRAINT, which scans under a "
        "ShareUpdateExclusiveLock that lets reads and writes continue."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        found = _added_constraints(statement_node(stmt))
        if found is None:
            return []
        table, constraints = found
        if is_new(table, ctx):
            return []
        out: list[Finding] = []
        for c in constraints:
            if c.contype not in (_FK, _CHECK) or c.skip_validation or c.is_enforced is False:
                continue
            if c.contype == _FK:
                parent = relation_name(c.pktable) or "the referenced table"
                label = f"foreign key {c.conname}" if c.conname else "a foreign key"
                out.append(
                    self.finding(
                        f"Adding {label} on {table} without NOT VALID reads every row of "
                        f"{table} while holding ShareRowExclusiveLock on {table} and "
                        f"{parent}: writes to both wait until it is done.",
                        severity="medium",
                    )
                )
            else:
                out.append(
                    self.finding(
                        f"Adding CHECK {_label(c)} on {table} without NOT VALID reads every "
                        f"row of {table} under an AccessExclusiveLock: reads and writes of "
                        f"{table} wait until it is done."
                    )
                )
        return out


@register
class DisallowedUniqueConstraint(BaseRule):
    id = "disallowed-unique-constraint"
    severity = "high"
    reason = (
        "Adding a UNIQUE or PRIMARY KEY constraint builds its index while holding an "
        "AccessExclusiveLock on the table: reads and writes wait for the whole build."
    )
    safer = (
        "Build the index first with CREATE UNIQUE INDEX CONCURRENTLY (outside a "
        "transaction), then attach it: ALTER TABLE ... ADD CONSTRAINT name UNIQUE USING "
        "INDEX index_name (or PRIMARY KEY USING INDEX), which is quick."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        node = statement_node(stmt)
        added = _added_constraints(node)
        columns = _added_columns(node)
        if added is None or columns is None:
            return []
        table, constraints = added
        if is_new(table, ctx):
            return []
        out: list[Finding] = []
        for c in constraints:
            if c.contype in (_UNIQUE, _PRIMARY) and not c.indexname:
                kind = "UNIQUE" if c.contype == _UNIQUE else "PRIMARY KEY"
                what = f"{kind} constraint {c.conname}" if c.conname else f"a {kind} constraint"
                out.append(
                    self.finding(
                        f"Adding {what} on {table} without USING INDEX builds "
                        f"its index under an AccessExclusiveLock: reads and writes of "
                        f"{table} wait for the whole build."
                    )
                )
        for col in columns[1]:
            for c in column_constraints(col):
                if c.contype in (_UNIQUE, _PRIMARY):
                    kind = "UNIQUE" if c.contype == _UNIQUE else "PRIMARY KEY"
                    out.append(
                        self.finding(
                            f"Adding column {col.colname} to {table} as {kind} builds an "
                            f"index over all of {table} under an AccessExclusiveLock: reads "
                            f"and writes of {table} wait for the whole build."
                        )
                    )
        return out
