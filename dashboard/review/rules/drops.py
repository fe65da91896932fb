"""Drop rules: dropping a table or column loses its data for good, and breaks running code."""

from __future__ import annotations

from pglast import ast, enums

from dashboard.review.model import Finding, PlanContext, StatementFacts
from dashboard.review.rules.base import (
    BaseRule,
    alter_table,
    dotted,
    is_new,
    register,
    statement_node,
)


@register
class BanDropColumn(BaseRule):
    id = "ban-drop-column"
    severity = "high"
    reason = (
        "Dropping a column destroys its data (a downgrade cannot bring it back) and breaks "
        "running code that still selects or writes it."
    )
    safer = (
        "First stop using the column in the application (and in ORM models) and release "
        "that; drop it in a later migration, after a backup, with a waiver that says why."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        found = alter_table(statement_node(stmt))
        if found is None:
            return []
        table, cmds = found
        if is_new(table, ctx):
            return []
        return [
            self.finding(
                f"Dropping {table}.{cmd.name} destroys its data for good and breaks running "
                "code that still uses it."
            )
            for cmd in cmds
            if cmd.subtype == enums.AlterTableType.AT_DropColumn
        ]


@register
class BanDropTable(BaseRule):
    id = "ban-drop-table"
    severity = "high"
    reason = (
        "Dropping a table destroys its data (a downgrade cannot bring it back), takes an "
        "AccessExclusiveLock on it, and breaks running code that still uses it."
    )
    safer = (
        "Stop using the table in the application first; drop it in a later migration, "
        "after a backup (or rename it aside and drop it once nobody missed it), with a "
        "waiver that says why."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        node = statement_node(stmt)
        if not isinstance(node, ast.DropStmt) or node.removeType != enums.ObjectType.OBJECT_TABLE:
            return []
        names = [dotted(o) for o in node.objects or () if isinstance(o, tuple)]
        existing = [n for n in names if n is not None and not is_new(n, ctx)]
        if not existing:
            return []
        return [
            self.finding(
                f"Dropping table {', '.join(existing)} destroys its data for good and breaks "
                "running code that still uses it."
            )
        ]
