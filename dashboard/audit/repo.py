"""All audit SQL: the one INSERT and the reads, on the append-only `<schema>.audit` table.

Writers go through `dashboard.audit.log.AuditLog` (which calls `insert_row`); readers
get frozen `AuditEntry` records from `AuditRepository`. Statements are SQLAlchemy Core on
the schema-less table of `dashboard.state.model`; the store's engine applies the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.state import model as m

if TYPE_CHECKING:
    from dashboard.state.store import StateStore

FACET_LIMIT = 500


@dataclass(frozen=True)
class AuditQuery:
    """Filters for reading the audit log (validated by dashboard.audit.query)."""

    actor: str | None = None
    action: str | None = None  # exact, or a prefix when it ends with "*"
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log, as read back."""

    id: int
    at: datetime
    actor: str
    address: str | None
    action: str
    target: str | None
    outcome: str
    detail: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> AuditEntry:
        r = row._mapping
        return cls(
            id=int(r["id"]),
            at=r["at"],
            actor=r["actor"],
            address=r["address"],
            action=r["action"],
            target=r["target"],
            outcome=r["outcome"],
            detail=r["detail"] or {},
        )


async def insert_row(
    conn: AsyncConnection,
    *,
    actor: str,
    action: str,
    outcome: str,
    target: str | None,
    address: str | None,
    detail: Mapping[str, Any],
) -> int:
    """The one audit INSERT (the table refuses UPDATE, DELETE and TRUNCATE); the new id."""
    stmt = (
        insert(m.audit)
        .values(
            at=func.now(),
            actor=actor,
            address=address,
            action=action,
            target=target,
            outcome=outcome,
            detail=dict(detail),
        )
        .returning(m.audit.c.id)
    )
    return int((await conn.execute(stmt)).scalar_one())


class AuditRepository:
    """Reads the audit log of one state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def entries(self, query: AuditQuery | None = None) -> list[AuditEntry]:
        """Newest first, filtered (`action` ending with "*" is a prefix)."""
        qf = query or AuditQuery()
        await self.store.ensure()
        a = m.audit.c
        q = select(m.audit).order_by(a.at.desc(), a.id.desc()).limit(qf.limit)
        if qf.action:
            if qf.action.endswith("*"):
                q = q.where(a.action.startswith(qf.action[:-1], autoescape=True))
            else:
                q = q.where(a.action == qf.action)
        if qf.actor:
            q = q.where(a.actor == qf.actor)
        if qf.outcome:
            q = q.where(a.outcome == qf.outcome)
        if qf.since is not None:
            q = q.where(a.at >= qf.since)
        if qf.until is not None:
            q = q.where(a.at < qf.until)
        async with self.store.connect() as conn:
            return [AuditEntry.from_row(r) for r in (await conn.execute(q)).all()]

    async def facets(self) -> dict[str, list[str]]:
        """Distinct actors, actions and outcomes (for the filter drop-downs)."""
        await self.store.ensure()
        out: dict[str, list[str]] = {}
        async with self.store.connect() as conn:
            for col in ("actor", "action", "outcome"):
                c = m.audit.c[col]
                rows = await conn.execute(select(c).distinct().order_by(c).limit(FACET_LIMIT))
                out[col] = [r[0] for r in rows]
        return out
