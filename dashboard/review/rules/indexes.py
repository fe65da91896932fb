"""Index rules: build and drop indexes without stopping the table's traffic."""

from __future__ import annotations

from pglast import ast, enums

from dashboard.review.model import Finding, PlanContext, StatementFacts
from dashboard.review.rules.base import (
    BaseRule,
    dotted,
    is_new,
    register,
    relation_name,
    statement_node,
)


@register
class RequireConcurrentIndexCreation(BaseRule):
    id = "require-concurrent-index-creation"
    severity = "medium"
    reason = (
        "CREATE INDEX without CONCURRENTLY holds a ShareLock on the table for the whole "
        "build: every INSERT, UPDATE and DELETE on it waits until the index is built."
    )
    safer = (
        "Use CREATE INDEX CONCURRENTLY, outside a transaction (in Alembic: "
        "op.create_index(..., postgresql_concurrently=True) inside "
        "op.get_context().autocommit_block()); if it fails, drop the INVALID index it "
        "leaves behind and retry."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        node = statement_node(stmt)
        if not isinstance(node, ast.IndexStmt) or node.concurrent:
            return []
        table = relation_name(node.relation)
        if table is None or is_new(table, ctx):
            return []
        what = f"index {node.idxname}" if node.idxname else "an index"
        return [
            self.finding(
                f"Building {what} on {table} without CONCURRENTLY holds a ShareLock on "
                f"{table} for the whole build: writes to {table} wait until it is done "
                "(reads continue)."
            )
        ]


@register
class RequireConcurrentIndexDeletion(BaseRule):
    id = "require-concurrent-index-deletion"
    severity = "medium"
    reason = (
        "DROP INDEX without CONCURRENTLY takes an AccessExclusiveLock on the index's table: "
        "while it waits for running transactions to finish, every later query on the "
        "table, reads included, queues behind it."
    )
    safer = (
        "Use DROP INDEX CONCURRENTLY, outside a transaction (in Alembic: "
        "op.drop_index(..., postgresql_concurrently=True) inside "
        "op.get_context().autocommit_block())."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        node = statement_node(stmt)
        if not isinstance(node, ast.DropStmt) or node.concurrent:
            return []
        if node.removeType != enums.ObjectType.OBJECT_INDEX:
            return []
        names = [dotted(obj) for obj in node.objects or () if isinstance(obj, tuple)]
        existing = [n for n in names if n is not None and not is_new(n, ctx)]
        if not existing:
            return []
        return [
            self.finding(
                f"DROP INDEX {', '.join(existing)} without CONCURRENTLY takes an "
                "AccessExclusiveLock on the indexed table: while it waits for running "
                "transactions, every later query on that table (reads included) waits too."
            )
        ]
