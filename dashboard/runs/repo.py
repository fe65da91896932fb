"""Every query on the runs, run log and approvals tables (SQL of the runs area).

A state transition is one transaction: the run row moves (compare-and-set on its
status), and the log lines and audit rows that describe the move are written with it, or
nothing is. Records come back frozen and typed (`records.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.audit.log import AuditEvent, AuditLog
from dashboard.runs.applied_by import RevisionEvent
from dashboard.runs.errors import RunConflict, RunUnavailable, reachable
from dashboard.runs.records import Approval, LogEntry, NewLogLine, Run, StaleRun
from dashboard.state import model as m
from dashboard.state.store import StateStore

# Timestamp columns a caller may set to the database's own clock with the value "now".
_NOW_COLUMNS = ("queued_at", "started_at", "finished_at", "heartbeat_at", "verified_at")

STATE = "the dashboard's state database"

Describe = Callable[[Run], tuple[Sequence[NewLogLine], Sequence[AuditEvent]]]


def _now_columns(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (func.now() if k in _NOW_COLUMNS and v == "now" else v) for k, v in values.items()}


def _is_active_clash(exc: IntegrityError) -> bool:
    return "runs_one_active_per_target" in str(exc)


class RunRepo:
    """Runs, their log and their approval decision, in the dashboard's schema."""

    def __init__(self, store: StateStore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    async def ensure(self) -> None:
        try:
            await self.store.ensure()
        except Exception as exc:
            raise RunUnavailable(
                f"the dashboard's state store is unavailable: {exc}", code="state_unavailable"
            ) from None

    async def _write(
        self,
        conn: AsyncConnection,
        log: Sequence[NewLogLine],
        audit: Sequence[AuditEvent],
    ) -> None:
        if log:
            await conn.execute(insert(m.run_log), [line.values() for line in log])
        for event in audit:
            await self.audit.write(event, conn)

    async def _busy(self, target: str) -> RunConflict:
        run = await self.active(target)
        if run is None:
            return RunConflict("another run is in progress", code="busy")
        return RunConflict(
            f"run {run.id} by {run.requested_by} is in progress ({run.status})",
            code="busy",
            extra={"run_id": run.id, "requested_by": run.requested_by, "status": run.status},
        )

    # -- writes ------------------------------------------------------------------------
    @reachable(STATE)
    async def insert(self, values: dict[str, Any], describe: Describe) -> Run:
        """Insert a run with its first log lines and audit rows (one transaction).
        RunConflict (`busy`) when the target already has a queued or running run."""
        await self.ensure()
        try:
            async with self.store.begin() as conn:
                row = (
                    await conn.execute(
                        insert(m.runs)
                        .values(created_at=func.now(), progress={}, **_now_columns(values))
                        .returning(*m.runs.c)
                    )
                ).one()
                run = Run.from_row(row._mapping)
                await self._write(conn, *describe(run))
        except IntegrityError as exc:
            if _is_active_clash(exc):
                raise await self._busy(values["target"]) from None
            raise
        return run

    @reachable(STATE)
    async def transition(
        self,
        run_id: int,
        from_statuses: Sequence[str],
        values: dict[str, Any],
        *,
        log: Sequence[NewLogLine] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> Run | None:
        """Compare-and-set on status, with its log lines and audit rows, atomically.
        None (and nothing written) when the run was not in one of `from_statuses`."""
        await self.ensure()
        try:
            async with self.store.begin() as conn:
                row = (
                    await conn.execute(
                        update(m.runs)
                        .where(m.runs.c.id == run_id, m.runs.c.status.in_(list(from_statuses)))
                        .values(**_now_columns(values))
                        .returning(*m.runs.c)
                    )
                ).first()
                if row is None:
                    return None
                await self._write(conn, log, audit)
        except IntegrityError as exc:
            if _is_active_clash(exc):
                current = await self.get(run_id)
                raise await self._busy(current.target if current else "") from None
            raise
        return Run.from_row(row._mapping)

    @reachable(STATE)
    async def append(
        self, log: Sequence[NewLogLine] = (), audit: Sequence[AuditEvent] = ()
    ) -> None:
        """Log lines and audit rows that go with no status change, in one transaction."""
        if not log and not audit:
            return
        await self.ensure()
        async with self.store.begin() as conn:
            await self._write(conn, log, audit)

    @reachable(STATE)
    async def heartbeat(
        self, run_id: int, progress: dict[str, Any], log: Sequence[NewLogLine]
    ) -> str | None:
        """Liveness, progress and the new log lines; returns who asked to cancel, if anyone."""
        async with self.store.begin() as conn:
            row = (
                await conn.execute(
                    update(m.runs)
                    .where(m.runs.c.id == run_id)
                    .values(heartbeat_at=func.now(), progress=progress)
                    .returning(m.runs.c.cancel_requested_by)
                )
            ).first()
            await self._write(conn, log, ())
        return row.cancel_requested_by if row is not None else None

    @reachable(STATE)
    async def request_cancel(
        self, run_id: int, actor: str, audit: Sequence[AuditEvent] = ()
    ) -> Run | None:
        return await self.transition(
            run_id,
            (m.RUNNING,),
            {"cancel_requested_by": actor, "cancel_requested_at": func.now()},
            log=[],
            audit=audit,
        )

    @reachable(STATE)
    async def decide(
        self,
        run_id: int,
        *,
        now: datetime,
        run_values: dict[str, Any],
        approval: dict[str, Any],
        log: Sequence[NewLogLine],
        audit: Sequence[AuditEvent],
    ) -> tuple[Run, Approval] | None:
        """An approve/reject decision, atomically: the run moves (only if it is still
        waiting, undecided and unexpired), the decision, its log line and audit row are
        written, in one transaction. None when someone else decided first."""
        await self.ensure()
        r = m.runs.c
        try:
            async with self.store.begin() as conn:
                row = (
                    await conn.execute(
                        update(m.runs)
                        .where(
                            r.id == run_id,
                            r.status == m.AWAITING_APPROVAL,
                            r.approved_by.is_(None),
                            or_(r.expires_at.is_(None), r.expires_at > now),
                        )
                        .values(**run_values)
                        .returning(*m.runs.c)
                    )
                ).first()
                if row is None:
                    return None
                decided = (
                    await conn.execute(
                        insert(m.approvals)
                        .values(run_id=run_id, decided_at=now, **approval)
                        .returning(*m.approvals.c)
                    )
                ).one()
                await self._write(conn, log, audit)
        except IntegrityError as exc:
            if "approvals_one_per_run" in str(exc):
                return None
            raise
        return Run.from_row(row._mapping), Approval.from_row(decided._mapping)

    # -- reads -------------------------------------------------------------------------
    @reachable(STATE)
    async def get(self, run_id: int) -> Run | None:
        if not 0 < run_id < 2**63:  # run ids are positive BIGINTs
            return None
        await self.ensure()
        async with self.store.connect() as conn:
            row = (await conn.execute(select(m.runs).where(m.runs.c.id == run_id))).first()
        return Run.from_row(row._mapping) if row else None

    @reachable(STATE)
    async def recent(
        self, *, limit: int = 50, statuses: Sequence[str] | None = None, target: str | None = None
    ) -> list[Run]:
        await self.ensure()
        q = select(m.runs).order_by(m.runs.c.id.desc()).limit(limit)
        if statuses:
            q = q.where(m.runs.c.status.in_(list(statuses)))
        if target:
            q = q.where(m.runs.c.target == target)
        async with self.store.connect() as conn:
            return [Run.from_row(r._mapping) for r in (await conn.execute(q)).all()]

    @reachable(STATE)
    async def active(self, target: str) -> Run | None:
        rows = await self.recent(limit=1, statuses=m.ACTIVE, target=target)
        return rows[0] if rows else None

    @reachable(STATE)
    async def stale(self, target: str) -> list[StaleRun]:
        """Queued or running runs, with how long since their owner last reported."""
        await self.ensure()
        q = select(m.runs).where(m.runs.c.target == target, m.runs.c.status.in_(list(m.ACTIVE)))
        async with self.store.connect() as conn:
            runs = [Run.from_row(r._mapping) for r in (await conn.execute(q)).all()]
            now: datetime = (await conn.execute(select(func.now()))).scalar_one()
        out = []
        for run in runs:
            beat = run.heartbeat_at or run.queued_at or run.created_at
            out.append(StaleRun(run, (now - beat).total_seconds() if beat else None))
        return out

    @reachable(STATE)
    async def due_for_expiry(self, target: str, now: datetime) -> list[Run]:
        """Runs still waiting (for approval or execution) past their `expires_at`."""
        await self.ensure()
        r = m.runs.c
        q = select(m.runs).where(
            r.target == target,
            r.status == m.AWAITING_APPROVAL,
            r.expires_at.is_not(None),
            r.expires_at <= now,
        )
        async with self.store.connect() as conn:
            return [Run.from_row(x._mapping) for x in (await conn.execute(q)).all()]

    @reachable(STATE)
    async def log_after(
        self, run_id: int, after: int = 0, limit: int | None = None
    ) -> list[LogEntry]:
        """Log lines with a sequence number above `after`, oldest first."""
        await self.ensure()
        q = (
            select(m.run_log)
            .where(m.run_log.c.run_id == run_id, m.run_log.c.id > after)
            .order_by(m.run_log.c.id)
        )
        if limit is not None:
            q = q.limit(limit)
        async with self.store.connect() as conn:
            return [LogEntry.from_row(r._mapping) for r in (await conn.execute(q)).all()]

    @reachable(STATE)
    async def log_tail(self, run_id: int, lines: int) -> tuple[list[LogEntry], int]:
        """The last `lines` log lines (oldest first) and how many lines the log has."""
        await self.ensure()
        c = m.run_log.c
        async with self.store.connect() as conn:
            total = (
                await conn.execute(select(func.count()).where(c.run_id == run_id))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(m.run_log).where(c.run_id == run_id).order_by(c.id.desc()).limit(lines)
                )
            ).all()
        return [LogEntry.from_row(r._mapping) for r in reversed(rows)], int(total)

    @reachable(STATE)
    async def approval(self, run_id: int) -> Approval | None:
        await self.ensure()
        async with self.store.connect() as conn:
            row = (
                await conn.execute(select(m.approvals).where(m.approvals.c.run_id == run_id))
            ).first()
        return Approval.from_row(row._mapping) if row else None

    @reachable(STATE)
    async def approvals_for(self, run_ids: Sequence[int]) -> dict[int, Approval]:
        if not run_ids:
            return {}
        await self.ensure()
        async with self.store.connect() as conn:
            rows = await conn.execute(
                select(m.approvals).where(m.approvals.c.run_id.in_(list(run_ids)))
            )
            return {int(r.run_id): Approval.from_row(r._mapping) for r in rows}

    @reachable(STATE)
    async def revision_events(self, target: str, revisions: Sequence[str]) -> list[RevisionEvent]:
        """For each of `revisions`, the newest `revision_applied` log line of `target`'s
        runs, with the run's direction, status and people (`applied_by.attribute`)."""
        if not revisions:
            return []
        await self.ensure()
        log, r = m.run_log.c, m.runs.c
        q = (
            select(
                log.revision,
                log.at,
                log.run_id,
                r.direction,
                r.status,
                r.requested_by,
                r.approved_by,
            )
            .select_from(m.run_log.join(m.runs, r.id == log.run_id))
            .where(
                r.target == target,
                log.event == "revision_applied",
                log.revision.in_(list(revisions)),
            )
            .ext(distinct_on(log.revision))
            .order_by(log.revision, log.id.desc())
        )
        async with self.store.connect() as conn:
            return [RevisionEvent.from_row(x._mapping) for x in (await conn.execute(q)).all()]
