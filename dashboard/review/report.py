"""The review of a plan, assembled (pure): each captured statement with its static facts,
its findings (waivers applied), its risk, what the rehearsal saw it lock, and the live
sessions in its way; the plan's risk; DESIGN's `/api/review` JSON.

I/O (the capture, table sizes, the sampler's lock rows) happens in `service.py`; this
module only combines what it is given.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from pglast import parse_sql

from dashboard.review.fingerprints import is_catalog
from dashboard.review.locks import analyze, facts_of, strongest
from dashboard.review.model import (
    Capture,
    CapturedStatement,
    RelationLock,
    StatementFacts,
)
from dashboard.review.nontransactional import NonTransactionalStep, non_transactional_steps
from dashboard.review.risk import at_least, highest, statement_risk
from dashboard.review.rules import ReviewedFinding, apply_waivers, check_statement, plan_contexts
from dashboard.review.statements import lock_disagreements

# The pseudo rule an acknowledgement of a data-dependent revision names.
DATA_DEPENDENT = "data-dependent"


class Jsonable(Protocol):
    def to_json(self) -> Mapping[str, Any]: ...


@functools.lru_cache(maxsize=4096)
def parse_statement(sql: str) -> StatementFacts:
    """The static facts of one captured statement (an unparseable one: kind "unparsed")."""
    found = analyze(sql)
    if len(found) == 1:
        return found[0]
    if not found:  # only transaction control or comments
        return facts_of(sql, parse_sql("SELECT 1")[0].stmt)
    # several statements in one text (op.execute("A; B")): the strongest view of them all
    first = found[0]
    locks: dict[str, str] = {}
    for facts in found:
        for lock in facts.locks:
            locks[lock.relation] = (
                strongest((locks[lock.relation], lock.mode))
                if lock.relation in locks
                else lock.mode
            )
    return replace(
        first,
        sql=sql,
        locks=tuple(RelationLock(r, m) for r, m in locks.items()),
        rewrite=any(f.rewrite for f in found),
        scan=any(f.scan for f in found),
        transactional=all(f.transactional for f in found),
        schema_change=any(f.schema_change for f in found),
        creates=tuple(c for f in found for c in f.creates),
        parse_error=next((f.parse_error for f in found if f.parse_error), None),
    )


@dataclass(frozen=True)
class ReviewedStatement:
    captured: CapturedStatement
    facts: StatementFacts
    findings: tuple[ReviewedFinding, ...]
    risk: str
    disagreements: tuple[str, ...] = ()
    conflicts: tuple[Jsonable, ...] = ()

    @property
    def revision(self) -> str:
        return self.captured.revision

    @property
    def index(self) -> int:
        return self.captured.index

    def to_json(self) -> dict[str, Any]:
        c, f = self.captured, self.facts
        return {
            "revision": c.revision,
            "index": c.index,
            "sql": c.sql,
            "fingerprint": c.fingerprint,
            "transactional": f.transactional,
            "in_transaction": c.in_transaction,
            "kind": f.kind,
            "schema_change": f.schema_change,
            "locks": [lock.to_json() for lock in f.locks],
            "rewrite": f.rewrite,
            "scan": f.scan,
            "risk": self.risk,
            "findings": [r.to_json() for r in self.findings],
            "observed_locks": None
            if c.observed_locks is None
            else [lock.to_json() for lock in c.observed_locks],
            "disagreements": list(self.disagreements),
            "parse_error": f.parse_error,
            "conflicts": [dict(x.to_json()) for x in self.conflicts],
        }


@dataclass(frozen=True)
class RevisionReview:
    revision: str
    message: str
    data_dependent: bool
    data_reason: str | None
    waivers: Mapping[str, str]
    statements: int
    risk: str

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "message": self.message,
            "data_dependent": self.data_dependent,
            "data_reason": self.data_reason,
            "waivers": dict(self.waivers),
            "statements": self.statements,
            "risk": self.risk,
        }


@dataclass(frozen=True)
class Review:
    direction: str
    target: str
    from_heads: tuple[str, ...]
    to_heads: tuple[str, ...]
    capture: Capture
    sql_sha256: str
    risk: str
    statements: tuple[ReviewedStatement, ...]
    revisions: tuple[RevisionReview, ...]
    relations: tuple[Jsonable, ...] = ()
    relations_error: str | None = None
    conflicts_at: datetime | None = None
    conflicts_note: str | None = None
    elapsed_ms: float = 0.0
    # per revision: its statements outside a transaction and what a failure would leave
    non_transactional: tuple[NonTransactionalStep, ...] = ()

    @property
    def exact(self) -> bool:
        return self.capture.exact

    @property
    def data_dependent(self) -> tuple[str, ...]:
        return tuple(r.revision for r in self.revisions if r.data_dependent)

    @property
    def findings(self) -> list[tuple[ReviewedStatement, ReviewedFinding]]:
        return [(s, f) for s in self.statements for f in s.findings]

    def conflict_count(self) -> int:
        return sum(len(s.conflicts) for s in self.statements)

    def relation_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.statements:
            for lock in s.facts.locks:
                if lock.relation != "?" and not is_catalog(lock.relation):
                    seen.setdefault(lock.relation, None)
        return list(seen)

    def with_live(
        self,
        conflicts: Sequence[Sequence[Jsonable]],
        *,
        at: datetime | None,
        note: str | None = None,
        relations: Sequence[Jsonable] | None = None,
        relations_error: str | None = None,
    ) -> Review:
        """The same review with live conflicts (one list per statement) and sizes."""
        stmts = tuple(
            replace(s, conflicts=tuple(c)) for s, c in zip(self.statements, conflicts, strict=True)
        )
        return replace(
            self,
            statements=stmts,
            conflicts_at=at,
            conflicts_note=note,
            relations=tuple(relations or ()),
            relations_error=relations_error,
        )

    def to_json(self) -> dict[str, Any]:
        cap = self.capture
        return {
            "direction": self.direction,
            "target": self.target,
            "from": list(self.from_heads),
            "to": list(self.to_heads),
            "exact": cap.exact,
            "source": cap.source,
            "note": cap.note,
            "rehearsal_error": cap.rehearsal_error,
            "sql_sha256": self.sql_sha256,
            "risk": self.risk,
            "data_dependent": list(self.data_dependent),
            "revisions": [r.to_json() for r in self.revisions],
            "statements": [s.to_json() for s in self.statements],
            "non_transactional": [n.to_json() for n in self.non_transactional],
            "relations": [dict(r.to_json()) for r in self.relations],
            "relations_error": self.relations_error,
            "conflicts_at": self.conflicts_at.isoformat() if self.conflicts_at else None,
            "conflicts_note": self.conflicts_note,
            "rehearsal_ms": round(cap.elapsed_ms, 1),
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


def build_review(
    *,
    direction: str,
    target: str,
    from_heads: Sequence[str],
    to_heads: Sequence[str],
    capture: Capture,
    sql_sha256: str,
    messages: Mapping[str, str],
    waivers: Mapping[str, Mapping[str, str]],
) -> Review:
    """Combine a capture with the static analysis, the rules (plan context: tables created
    earlier in the plan are new; statements outside a transaction), waivers and risk."""
    captured = list(capture.statements)
    facts = [parse_statement(s.sql) for s in captured]
    contexts = plan_contexts(facts, in_transaction=[s.in_transaction for s in captured])
    reviewed: list[ReviewedStatement] = []
    for stmt, fx, ctx in zip(captured, facts, contexts, strict=True):
        found = apply_waivers(check_statement(fx, ctx), waivers.get(stmt.revision, {}))
        risk = statement_risk(fx, found, ctx)
        seen: tuple[str, ...] = ()
        if stmt.observed_locks is not None and fx.parsed:
            seen = tuple(lock_disagreements(fx, stmt.observed_locks))
        reviewed.append(ReviewedStatement(stmt, fx, tuple(found), risk, seen))
    revisions: list[RevisionReview] = []
    for rev in capture.revisions:
        dep, reason = rev.data_dependent, rev.data_reason
        mine = [s for s in reviewed if s.revision == rev.revision]
        rev_risk = highest(s.risk for s in mine)
        if dep:
            rev_risk = highest((rev_risk, "medium"))
        revisions.append(
            RevisionReview(
                rev.revision,
                messages.get(rev.revision, ""),
                dep,
                reason,
                dict(waivers.get(rev.revision, {})),
                len(mine),
                rev_risk,
            )
        )
    return Review(
        direction=direction,
        target=target,
        from_heads=tuple(from_heads),
        to_heads=tuple(to_heads),
        capture=capture,
        sql_sha256=sql_sha256,
        risk=highest(r.risk for r in revisions),
        statements=tuple(reviewed),
        revisions=tuple(revisions),
        non_transactional=non_transactional_steps(captured, direction=direction),
    )


def fails(review: Review, fail_on: str) -> bool:
    """`dashboard review --fail-on LEVEL`: the plan's risk reaches LEVEL ("never": never)."""
    return fail_on != "never" and review.risk != "none" and at_least(review.risk, fail_on)
