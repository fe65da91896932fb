"""Every query on the `incidents` table (SQL of the incidents area).

SQLAlchemy Core on the schema-less table of dashboard/state/model.py; the store's engine
applies the schema. Records come back frozen (`IncidentRecord`).

One open row per kind and key (the partial unique index `incidents_open_key`): opening is
`INSERT … ON CONFLICT DO NOTHING` and, when another process (a replica watching the same
database) already has that incident open, joining its row in the same transaction.
Updates never lower a peak another process wrote: the peak columns change only when the
new peak is at least the stored one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, case, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.history.incidents import Incident, IncidentRoot
from dashboard.state import model as m

if TYPE_CHECKING:
    from dashboard.state.store import StateStore

MAX_LIMIT = 500
DEFAULT_LIMIT = 100

c = m.incidents.c


@dataclass(frozen=True)
class IncidentQuery:
    """Filters for reading incidents (validated by dashboard/history/incident_view.py)."""

    kind: str | None = None
    since: datetime | None = None  # incidents going on at any time after this
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class IncidentRecord:
    """One row of `incidents`, as read back."""

    id: int
    kind: str
    key: str
    service: str
    instance: str
    started_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    root_pid: int | None
    root: IncidentRoot | None
    peak_blast_radius: int
    peak_at: datetime | None
    peak: Mapping[str, Any]
    summary: str

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def note(self) -> str | None:
        note = self.peak.get("note")
        return str(note) if note else None

    @classmethod
    def from_row(cls, row: Any) -> IncidentRecord:
        r = row._mapping
        return cls(
            id=int(r["id"]),
            kind=r["kind"],
            key=r["key"],
            service=r["service"],
            instance=r["instance"],
            started_at=r["started_at"],
            ended_at=r["ended_at"],
            updated_at=r["updated_at"],
            root_pid=r["root_pid"],
            root=IncidentRoot.from_json(r["root"]),
            peak_blast_radius=int(r["peak_blast_radius"]),
            peak_at=r["peak_at"],
            peak=r["peak"] if isinstance(r["peak"], dict) else {},
            summary=r["summary"],
        )

    def to_incident(self) -> Incident:
        """As the detector knows incidents (for adoption at start-up)."""
        return Incident(
            local_id=0,
            kind=self.kind,
            key=self.key,
            started_at=self.started_at,
            updated_at=self.updated_at,
            root=self.root,
            peak_blast_radius=self.peak_blast_radius,
            peak_at=self.peak_at,
            peak=dict(self.peak),
            summary=self.summary,
            ended_at=self.ended_at,
            note=self.note,
            db_id=self.id,
        )


def peak_json(inc: Incident) -> dict[str, Any]:
    """What the `peak` column stores: the detector's peak, plus the note when there is one."""
    body = dict(inc.peak)
    if inc.note:
        body["note"] = inc.note
    return body


def _state_values(inc: Incident) -> dict[str, Any]:
    """Column values of an update: the peak columns only when this peak is not lower."""
    new_peak = literal(inc.peak_blast_radius, Integer)
    higher = c.peak_blast_radius <= new_peak
    return {
        "updated_at": func.greatest(c.updated_at, inc.updated_at),
        "peak_blast_radius": func.greatest(c.peak_blast_radius, new_peak),
        "root_pid": case((higher, literal(inc.root_pid, Integer)), else_=c.root_pid),
        "root": case(
            (higher, literal(inc.root.to_json() if inc.root else None, JSONB)), else_=c.root
        ),
        "peak_at": case((higher, inc.peak_at), else_=c.peak_at),
        "peak": case((higher, literal(peak_json(inc), JSONB)), else_=c.peak),
        "summary": case((higher, inc.summary), else_=c.summary),
    }


class IncidentRepository:
    """Reads and writes incidents in one state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    # -- writes ------------------------------------------------------------------------
    async def open(self, inc: Incident, *, service: str, instance: str) -> int:
        """Insert `inc` as open, or join the row of the same kind and key that is open
        already (one transaction); its id."""
        await self.store.ensure()
        async with self.store.begin() as conn:
            for _ in range(3):
                stmt = (
                    insert(m.incidents)
                    .values(
                        kind=inc.kind,
                        key=inc.key,
                        service=service,
                        instance=instance,
                        started_at=inc.started_at,
                        ended_at=None,
                        updated_at=inc.updated_at,
                        root_pid=inc.root_pid,
                        root=inc.root.to_json() if inc.root else None,
                        peak_blast_radius=inc.peak_blast_radius,
                        peak_at=inc.peak_at,
                        peak=peak_json(inc),
                        summary=inc.summary,
                    )
                    .on_conflict_do_nothing(
                        index_elements=["kind", "key"], index_where=c.ended_at.is_(None)
                    )
                    .returning(c.id)
                )
                new_id = (await conn.execute(stmt)).scalar_one_or_none()
                if new_id is not None:
                    return int(new_id)
                found = await self._open_id(conn, inc.kind, inc.key)
                if found is not None:
                    await self._update(conn, found, inc)
                    return found
            raise RuntimeError(f"could not open incident {inc.kind} {inc.key}")

    @staticmethod
    async def _open_id(conn: AsyncConnection, kind: str, key: str) -> int | None:
        q = select(c.id).where(c.kind == kind, c.key == key, c.ended_at.is_(None)).with_for_update()
        found = (await conn.execute(q)).scalar_one_or_none()
        return None if found is None else int(found)

    @staticmethod
    async def _update(conn: AsyncConnection, incident_id: int, inc: Incident) -> bool:
        values = _state_values(inc)
        if inc.ended_at is not None:
            values["ended_at"] = inc.ended_at
        stmt = (
            update(m.incidents)
            .where(c.id == incident_id, c.ended_at.is_(None))
            .values(**values)
            .returning(c.id)
        )
        return (await conn.execute(stmt)).scalar_one_or_none() is not None

    async def update(self, incident_id: int, inc: Incident) -> bool:
        """Write the incident's latest state (and its end when `inc.ended_at` is set) to an
        open row. False when the row is closed already (or gone)."""
        await self.store.ensure()
        async with self.store.begin() as conn:
            return await self._update(conn, incident_id, inc)

    # -- reads -------------------------------------------------------------------------
    async def list_incidents(self, query: IncidentQuery | None = None) -> list[IncidentRecord]:
        """Newest first; `since`: incidents still open, or that ended after it."""
        qf = query or IncidentQuery()
        await self.store.ensure()
        q = (
            select(m.incidents)
            .order_by(c.started_at.desc(), c.id.desc())
            .limit(max(1, min(qf.limit, MAX_LIMIT)))
        )
        if qf.kind:
            q = q.where(c.kind == qf.kind)
        if qf.since is not None:
            q = q.where(or_(c.ended_at.is_(None), c.ended_at >= qf.since))
        async with self.store.connect() as conn:
            return [IncidentRecord.from_row(r) for r in (await conn.execute(q)).all()]

    async def get(self, incident_id: int) -> IncidentRecord | None:
        await self.store.ensure()
        async with self.store.connect() as conn:
            row = (await conn.execute(select(m.incidents).where(c.id == incident_id))).one_or_none()
        return None if row is None else IncidentRecord.from_row(row)

    async def adoptable(
        self, *, service: str, instance: str, stale_before: datetime
    ) -> list[IncidentRecord]:
        """Open incidents a previous process left: those of this service and instance,
        and those of any instance of this service not updated since `stale_before` (an
        instance named after its host and pid never comes back under the same name)."""
        await self.store.ensure()
        q = (
            select(m.incidents)
            .where(
                c.ended_at.is_(None),
                c.service == service,
                or_(c.instance == instance, c.updated_at < stale_before),
            )
            .order_by(c.started_at, c.id)
        )
        async with self.store.connect() as conn:
            return [IncidentRecord.from_row(r) for r in (await conn.execute(q)).all()]
