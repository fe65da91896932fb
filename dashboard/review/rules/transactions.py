"""Transaction rules: statements that cannot run where the plan puts them, and statements
the parser could not read."""

from __future__ import annotations

from pglast import ast

from dashboard.review.model import Finding, PlanContext, StatementFacts
from dashboard.review.rules.base import BaseRule, dotted, register, relation_name, statement_node


def _concurrent_index_operation(node: ast.Node | None) -> str | None:
    """What the statement does CONCURRENTLY to an index, or None."""
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        name = node.idxname or "an index"
        return f"CREATE INDEX CONCURRENTLY ({name} on {relation_name(node.relation)})"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        names = [dotted(o) for o in node.objects or () if isinstance(o, tuple)]
        return f"DROP INDEX CONCURRENTLY ({', '.join(n for n in names if n)})"
    if isinstance(node, ast.ReindexStmt):
        for p in node.params or ():
            if isinstance(p, ast.DefElem) and p.defname == "concurrently":
                target = relation_name(node.relation) or node.name or ""
                return f"REINDEX CONCURRENTLY ({target})"
    return None


@register
class BanConcurrentIndexCreationInTransaction(BaseRule):
    id = "ban-concurrent-index-creation-in-transaction"
    severity = "high"
    reason = (
        "CREATE INDEX CONCURRENTLY (like DROP INDEX and REINDEX CONCURRENTLY) cannot run "
        "inside a transaction block: PostgreSQL refuses it, and the revision fails and "
        "rolls back."
    )
    safer = (
        "Run it outside the revision's transaction: in Alembic, wrap it in "
        "`with op.get_context().autocommit_block():`, ideally in a revision of its own "
        "(a failed build leaves an INVALID index to drop before retrying)."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        if not ctx.in_transaction:
            return []
        what = _concurrent_index_operation(statement_node(stmt))
        if what is None:
            return []
        return [
            self.finding(
                f"{what} runs inside the revision's transaction block, where PostgreSQL "
                'refuses it ("cannot run inside a transaction block"): the revision '
                "fails and rolls back."
            )
        ]


@register
class UnparsedStatement(BaseRule):
    id = "unparsed-statement"
    severity = "medium"
    reason = (
        "The SQL parser could not read this statement, so what it locks is unknown; it is "
        "treated as taking an AccessExclusiveLock (reads and writes wait)."
    )
    safer = (
        "Check the statement by hand (and on a rehearsal database); if it is valid "
        "PostgreSQL that the parser does not know, say so in a waiver."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        if stmt.parsed and stmt.kind != "unparsed":
            return []
        why = f": {stmt.parse_error}" if stmt.parse_error else ""
        return [
            self.finding(
                f"The SQL parser could not read this statement{why}. What it locks is "
                "unknown, so it is treated as an AccessExclusiveLock (reads and writes wait)."
            )
        ]
