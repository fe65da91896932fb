"""The rule protocol, the registry, and the walk over a plan that gives each rule its context.

Pure: a rule reads one statement's `StatementFacts` (and its pglast node) plus the
`PlanContext` around it, and returns findings. No I/O, no catalog: what only the live
database knows (table sizes, sessions in the way) is added elsewhere.

Severities, used the same way by every rule:

- `high`: reads *and* writes of an existing table wait for time that grows with the
  table (a rewrite, a full scan or an index build under AccessExclusiveLock); or data is
  lost for good; or the statement is certain to fail.
- `medium`: writes of an existing table wait for time that grows with the table (an
  index build under ShareLock, a foreign key validated under ShareRowExclusiveLock); or
  running application code breaks (a rename); or the statement could not be read.
- `low`: a brief lock that is still worth knowing about.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pglast import ast, enums

from dashboard.review.model import SEVERITIES, Finding, PlanContext, StatementFacts


class Rule(Protocol):
    """One check. `severity` is the rule's usual severity (a finding may say less, when
    the statement turns out milder than the worst case, e.g. a type change without a
    rewrite); `reason` says what goes wrong, `safer` how to do it instead."""

    id: str
    severity: str
    reason: str
    safer: str

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]: ...


RuleT = TypeVar("RuleT", bound=type[Rule])

RULES: dict[str, Rule] = {}


def register(cls: RuleT) -> RuleT:
    """Class decorator: instantiate the rule and add it to `RULES` under its id."""
    rule = cls()
    if rule.id in RULES:
        raise ValueError(f"rule id {rule.id!r} is registered twice")
    if rule.severity not in SEVERITIES:
        raise ValueError(f"rule {rule.id!r}: severity {rule.severity!r} not in {SEVERITIES}")
    RULES[rule.id] = rule
    return cls


class BaseRule:
    """Convenience for rule classes: `finding()` fills in the rule's own fields."""

    id: str = ""
    severity: str = "none"
    reason: str = ""
    safer: str = ""

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        raise NotImplementedError

    def finding(
        self, message: str | None = None, *, severity: str | None = None, safer: str | None = None
    ) -> Finding:
        sev = severity or self.severity
        if sev not in SEVERITIES:
            raise ValueError(f"severity {sev!r} not in {SEVERITIES}")
        return Finding(
            rule=self.id, severity=sev, message=message or self.reason, safer=safer or self.safer
        )


def check_statement(stmt: StatementFacts, ctx: PlanContext | None = None) -> list[Finding]:
    """Every registered rule's findings for one statement, in registration order."""
    context = ctx if ctx is not None else PlanContext()
    found: list[Finding] = []
    for rule in RULES.values():
        found.extend(rule.check(stmt, context))
    return found


InTransaction = bool | Sequence[bool]


def check_plan(
    statements: Sequence[StatementFacts], *, in_transaction: InTransaction = True
) -> list[list[Finding]]:
    """Findings per statement, each checked with the context the plan has built so far.

    `in_transaction`: see `plan_contexts`. With `locks.analyze_blocks(sql)`, pass the
    per-statement flags it returns.
    """
    contexts = plan_contexts(statements, in_transaction=in_transaction)
    return [check_statement(stmt, ctx) for stmt, ctx in zip(statements, contexts, strict=True)]


def plan_contexts(
    statements: Sequence[StatementFacts], *, in_transaction: InTransaction = True
) -> list[PlanContext]:
    """The `PlanContext` of each statement of a plan, in order.

    - `new_relations`: what earlier statements of the plan created (`StatementFacts.creates`,
      or the CREATE TABLE / CREATE INDEX node when `creates` is empty), followed through
      renames. Nobody else uses those yet, so locking or rewriting them harms no one.
    - `in_transaction`: either one flag per statement (whether it runs inside a
      transaction block, as `locks.analyze_blocks()` reports it), or a single starting
      state (default True: Alembic runs each revision in a transaction) that then follows
      any BEGIN / COMMIT / ROLLBACK statements present in `statements`. Alembic's offline
      SQL brackets an `autocommit_block()` with `COMMIT;` ... `BEGIN;`, so a
      CREATE INDEX CONCURRENTLY written that way is seen outside a transaction.
    """
    flags: Sequence[bool] | None = None
    if not isinstance(in_transaction, bool):
        flags = in_transaction
        if len(flags) != len(statements):
            raise ValueError(f"{len(statements)} statements but {len(flags)} in_transaction flags")
    new: set[str] = set()
    in_tx = in_transaction if isinstance(in_transaction, bool) else True
    out: list[PlanContext] = []
    for i, stmt in enumerate(statements):
        if flags is not None:
            in_tx = bool(flags[i])
        out.append(PlanContext(new_relations=frozenset(new), in_transaction=in_tx))
        node = statement_node(stmt)
        if isinstance(node, ast.TransactionStmt):
            in_tx = _transaction_state_after(node, in_tx)
        new.update(created_by(stmt))
        renamed = _renamed_new_relation(node, new)
        if renamed is not None:
            new.discard(renamed[0])
            new.add(renamed[1])
    return out


def _transaction_state_after(node: ast.TransactionStmt, in_tx: bool) -> bool:
    kind = node.kind
    if kind in (
        enums.TransactionStmtKind.TRANS_STMT_BEGIN,
        enums.TransactionStmtKind.TRANS_STMT_START,
    ):
        return True
    if kind in (
        enums.TransactionStmtKind.TRANS_STMT_COMMIT,
        enums.TransactionStmtKind.TRANS_STMT_ROLLBACK,
        enums.TransactionStmtKind.TRANS_STMT_PREPARE,
    ):
        return bool(node.chain)  # COMMIT AND CHAIN starts the next transaction at once
    return in_tx  # SAVEPOINT, RELEASE, ROLLBACK TO, COMMIT/ROLLBACK PREPARED


def created_by(stmt: StatementFacts) -> tuple[str, ...]:
    """What the statement creates: `creates`, or the CREATE TABLE / INDEX node's name."""
    if stmt.creates:
        return stmt.creates
    node = statement_node(stmt)
    if isinstance(node, ast.CreateStmt):
        name = relation_name(node.relation)
    elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        name = relation_name(node.into.rel)
    elif isinstance(node, ast.IndexStmt) and node.idxname:
        schema = node.relation.schemaname if node.relation is not None else None
        name = f"{schema}.{node.idxname}" if schema else node.idxname
    else:
        name = None
    return (name,) if name else ()


def _renamed_new_relation(node: ast.Node | None, new: set[str]) -> tuple[str, str] | None:
    """(old, new) when the statement renames a table or index created earlier in the plan."""
    if not isinstance(node, ast.RenameStmt) or not node.newname:
        return None
    if node.renameType not in (enums.ObjectType.OBJECT_TABLE, enums.ObjectType.OBJECT_INDEX):
        return None
    old = relation_name(node.relation)
    match = next((n for n in new if old and same_relation(n, old)), None)
    if match is None:
        return None
    schema, _, _bare = match.rpartition(".")
    return match, f"{schema}.{node.newname}" if schema else node.newname


# --- helpers shared by the rule modules -------------------------------------------------


def statement_node(stmt: StatementFacts) -> ast.Node | None:
    """The typed pglast node of a statement (unwrapping a `RawStmt`), or None if unparsed."""
    node = stmt.node
    if isinstance(node, ast.RawStmt):
        node = node.stmt
    return node if isinstance(node, ast.Node) else None


def relation_name(rv: ast.RangeVar | None) -> str | None:
    """`schema.table` when the statement names the schema, else `table` (as RelationLock)."""
    if rv is None or not rv.relname:
        return None
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else rv.relname


def dotted(names: Sequence[ast.Node] | None) -> str | None:
    """A qualified name given as a list of `String` nodes (DROP objects), joined by dots."""
    parts = [n.sval for n in names or () if isinstance(n, ast.String) and n.sval]
    return ".".join(parts) or None


def same_relation(a: str, b: str) -> bool:
    """Same relation, allowing one side to leave out the schema (`orders` ~ `app.orders`)."""
    if a == b:
        return True
    if ("." in a) == ("." in b):
        return False
    return a.rpartition(".")[2] == b.rpartition(".")[2]


def is_new(name: str | None, ctx: PlanContext) -> bool:
    """True when `name` was created earlier in the plan (so nobody else uses it yet)."""
    return name is not None and any(same_relation(name, n) for n in ctx.new_relations)


def alter_table(node: ast.Node | None) -> tuple[str, list[ast.AlterTableCmd]] | None:
    """The table and subcommands of an `ALTER TABLE` (not ALTER INDEX / VIEW / ...)."""
    if not isinstance(node, ast.AlterTableStmt):
        return None
    if node.objtype != enums.ObjectType.OBJECT_TABLE:
        return None
    name = relation_name(node.relation)
    if name is None:
        return None
    cmds = [c for c in node.cmds or () if isinstance(c, ast.AlterTableCmd)]
    return name, cmds


def column_constraints(coldef: ast.ColumnDef) -> Iterator[ast.Constraint]:
    for c in coldef.constraints or ():
        if isinstance(c, ast.Constraint):
            yield c


# --- a finding together with its waiver ------------------------------------------------


@dataclass(frozen=True)
class ReviewedFinding:
    """A finding after the revision's waivers were applied. A waived finding is kept (it
    is shown, struck through, with the waiver's reason), but no longer counts towards
    `--fail-on` or the statement's finding severity."""

    finding: Finding
    waived: str | None = None  # the waiver's reason, when the revision waives this rule

    @property
    def rule(self) -> str:
        return self.finding.rule

    @property
    def severity(self) -> str:
        return self.finding.severity

    @property
    def message(self) -> str:
        return self.finding.message

    @property
    def safer(self) -> str:
        return self.finding.safer

    @property
    def is_waived(self) -> bool:
        return self.waived is not None

    @property
    def effective_severity(self) -> str:
        """`none` when waived, else the finding's severity."""
        return "none" if self.waived is not None else self.finding.severity

    def to_json(self) -> dict[str, str | bool | None]:
        out: dict[str, str | bool | None] = dict(self.finding.to_json())
        out["waived"] = self.waived is not None
        out["waiver_reason"] = self.waived
        return out
