"""The risk of a statement and of a plan: one of `none`, `low`, `medium`, `high` (pure).

The risk is the highest of:

- the severity of the statement's findings that are not waived;
- `high` when the statement rewrites or scans a table that exists before the plan while
  holding an AccessExclusiveLock on it (DESIGN: reads and writes wait for the whole pass);
- `medium` when the statement could not be parsed, or a lock mode is unknown: that is
  counted as an AccessExclusiveLock whose duration nobody can tell;
- `low` for any other AccessExclusiveLock on an existing table: brief, but while it waits
  for a running transaction every later query on the table queues behind it.

A waiver silences a rule's finding; it does not change what the statement does, so the
lock-based floors above still apply to a waived statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    SEVERITIES,
    UNKNOWN,
    Finding,
    PlanContext,
    StatementFacts,
)
from dashboard.review.rules import ReviewedFinding, check_plan, plan_contexts
from dashboard.review.rules.base import InTransaction, created_by, is_new

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def highest(levels: Iterable[str]) -> str:
    """The highest of some severities (`none` for none); unknown strings are ignored."""
    best = "none"
    for level in levels:
        if _RANK.get(level, 0) > _RANK[best]:
            best = level
    return best


def at_least(level: str, threshold: str) -> bool:
    """`level` is `threshold` or higher (both in SEVERITIES)."""
    return _RANK[level] >= _RANK[threshold]


def _severity(f: Finding | ReviewedFinding) -> str:
    return f.effective_severity if isinstance(f, ReviewedFinding) else f.severity


def lock_floor(stmt: StatementFacts, ctx: PlanContext | None = None) -> str:
    """The risk the statement's locks alone give it, whatever the rules say."""
    context = ctx if ctx is not None else PlanContext()
    if not stmt.parsed or stmt.kind == "unparsed":
        return "medium"
    # what the statement itself creates is new too (CREATE TABLE locks its own table)
    context = PlanContext(
        new_relations=context.new_relations | frozenset(created_by(stmt)),
        in_transaction=context.in_transaction,
    )
    exclusive_on_existing = [
        lock
        for lock in stmt.locks
        if lock.mode in (ACCESS_EXCLUSIVE, UNKNOWN) and not is_new(lock.relation, context)
    ]
    if exclusive_on_existing and (stmt.rewrite or stmt.scan):
        return "high"
    if any(lock.mode == UNKNOWN for lock in stmt.locks):
        return "medium"
    return "low" if exclusive_on_existing else "none"


def statement_risk(
    stmt: StatementFacts,
    findings: Iterable[Finding | ReviewedFinding] = (),
    ctx: PlanContext | None = None,
) -> str:
    """The risk of one statement, given its findings (waived ones do not count) and the
    plan context (tables created earlier in the plan are not "existing")."""
    return highest([lock_floor(stmt, ctx), *(_severity(f) for f in findings)])


def statement_risks(
    statements: Sequence[StatementFacts],
    findings: Sequence[Sequence[Finding | ReviewedFinding]] | None = None,
    *,
    in_transaction: InTransaction = True,
) -> list[str]:
    """The risk of each statement of a plan; findings default to `check_plan`'s."""
    per_statement: Sequence[Sequence[Finding | ReviewedFinding]] = (
        findings if findings is not None else check_plan(statements, in_transaction=in_transaction)
    )
    if len(per_statement) != len(statements):
        raise ValueError(f"{len(statements)} statements but findings for {len(per_statement)}")
    contexts = plan_contexts(statements, in_transaction=in_transaction)
    return [
        statement_risk(stmt, found, ctx)
        for stmt, found, ctx in zip(statements, per_statement, contexts, strict=True)
    ]


def plan_risk(
    statements: Sequence[StatementFacts],
    findings: Sequence[Sequence[Finding | ReviewedFinding]] | None = None,
    *,
    in_transaction: InTransaction = True,
) -> str:
    """The highest statement risk of a plan (`none` for an empty plan)."""
    return highest(statement_risks(statements, findings, in_transaction=in_transaction))
