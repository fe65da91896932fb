"""Rename rules: a rename is instant, but the code already running still uses the old name."""

from __future__ import annotations

from pglast import ast, enums

from dashboard.review.model import Finding, PlanContext, StatementFacts
from dashboard.review.rules.base import BaseRule, is_new, register, relation_name, statement_node


def _rename(node: ast.Node | None, kind: enums.ObjectType) -> ast.RenameStmt | None:
    if isinstance(node, ast.RenameStmt) and node.renameType == kind:
        return node
    return None


@register
class RenamingColumn(BaseRule):
    id = "renaming-column"
    severity = "medium"
    reason = (
        "Renaming a column breaks every running client that still uses the old name: "
        "application instances deployed before the migration fail until they are replaced."
    )
    safer = (
        "Expand and contract: add the new column, write to both, backfill, move readers, "
        "then drop the old column in a later release (or keep the old name and map it in "
        "the ORM)."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        node = _rename(statement_node(stmt), enums.ObjectType.OBJECT_COLUMN)
        if node is None:
            return []
        table = relation_name(node.relation)
        if table is None or is_new(table, ctx):
            return []
        return [
            self.finding(
                f"Renaming {table}.{node.subname} to {node.newname} breaks running code "
                f"that still reads or writes {node.subname}, until every instance is "
                "replaced."
            )
        ]


@register
class RenamingTable(BaseRule):
    id = "renaming-table"
    severity = "medium"
    reason = (
        "Renaming a table breaks every running client that still uses the old name: "
        "application instances deployed before the migration fail until they are replaced."
    )
    safer = (
        "Create the new table (or rename and leave an updatable view under the old name) "
        "and move readers and writers over before removing the old name."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        node = _rename(statement_node(stmt), enums.ObjectType.OBJECT_TABLE)
        if node is None:
            return []
        table = relation_name(node.relation)
        if table is None or is_new(table, ctx):
            return []
        return [
            self.finding(
                f"Renaming table {table} to {node.newname} breaks running code that still "
                f"uses {table}, until every instance is replaced."
            )
        ]
