"""The state store: the dashboard's own engine and every query on its own schema.

All state SQL lives in this module, except the audit table's (dashboard/audit/repo.py,
behind the one writer dashboard/audit/log.py). Queries are SQLAlchemy Core constructs on the
schema-less tables of `model.py`; the configured schema is applied through
`schema_translate_map`, so no identifier is ever formatted into SQL text.

The engine is the dashboard's own (application_name "dashboard-state", a tiny pool with
statement and lock timeouts): never the observed application's pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard.state import model as m
from dashboard.state.migrate import STATE_APP_NAME, upgrade_state_schema

log = logging.getLogger(__name__)

STATE_SERVER_SETTINGS = {
    "application_name": STATE_APP_NAME,
    "statement_timeout": "10000",
    "lock_timeout": "2000",
    "idle_in_transaction_session_timeout": "20000",
}


def create_state_engine(url: str) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=3,
        max_overflow=3,
        pool_timeout=10,
        pool_recycle=600,
        pool_pre_ping=True,
        connect_args={"server_settings": dict(STATE_SERVER_SETTINGS), "timeout": 10},
    )


class StateUnavailable(Exception):
    """The dashboard schema could not be created or reached."""


class ActiveRunExists(Exception):
    def __init__(self, run: dict[str, Any] | None) -> None:
        self.run = run
        if run:
            msg = f"run {run['id']} by {run['requested_by']} is in progress ({run['status']})"
        else:
            msg = "another run is in progress"
        super().__init__(msg)


def row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class StateStore:
    """Durable runs, run log and audit. `start()` creates/upgrades the schema."""

    def __init__(self, url: str, schema: str = "dashboard") -> None:
        self.url = url
        self.schema = schema
        # For the target's own catalog (version table, pg_locks, pg_stat_activity).
        self.raw_engine = create_state_engine(url)
        # Every statement on the dashboard's tables goes to the configured schema.
        self.engine = self.raw_engine.execution_options(schema_translate_map={None: schema})
        self.ready = False
        self.error = "not started"
        self.applied: list[str] = []
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.ensure()
        except StateUnavailable as exc:
            log.warning("dashboard state schema not ready yet: %s", exc)

    async def stop(self) -> None:
        await self.raw_engine.dispose()

    async def ensure(self) -> None:
        if self.ready:
            return
        async with self._lock:
            if self.ready:
                return
            try:
                self.applied = await upgrade_state_schema(self.url, self.schema)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                raise StateUnavailable(self.error) from exc
            if self.applied:
                log.info("dashboard schema %r upgraded: %s", self.schema, self.applied)
            self.ready, self.error = True, ""

    def connect(self) -> Any:
        return self.engine.connect()

    def begin(self) -> Any:
        return self.engine.begin()

    # -- runs --------------------------------------------------------------------------
    async def insert_run(self, values: dict[str, Any]) -> dict[str, Any]:
        """Insert a run; ActiveRunExists when the target already has a queued/running run."""
        await self.ensure()
        values = {"progress": {}, **values}
        try:
            async with self.begin() as conn:
                row = (
                    await conn.execute(
                        insert(m.runs).values(created_at=func.now(), **values).returning(*m.runs.c)
                    )
                ).one()
                return row_dict(row)
        except IntegrityError as exc:
            if "runs_one_active_per_target" in str(exc):
                raise ActiveRunExists(await self.active_run(values["target"])) from None
            raise

    async def get_run(self, run_id: int) -> dict[str, Any] | None:
        await self.ensure()
        async with self.connect() as conn:
            row = (await conn.execute(select(m.runs).where(m.runs.c.id == run_id))).first()
        return row_dict(row) if row else None

    async def list_runs(
        self, *, limit: int = 50, statuses: Sequence[str] | None = None, target: str | None = None
    ) -> list[dict[str, Any]]:
        await self.ensure()
        q = select(m.runs).order_by(m.runs.c.id.desc()).limit(limit)
        if statuses:
            q = q.where(m.runs.c.status.in_(list(statuses)))
        if target:
            q = q.where(m.runs.c.target == target)
        async with self.connect() as conn:
            return [row_dict(r) for r in (await conn.execute(q)).all()]

    async def active_run(self, target: str) -> dict[str, Any] | None:
        rows = await self.list_runs(limit=1, statuses=m.ACTIVE, target=target)
        return rows[0] if rows else None

    async def transition(
        self, run_id: int, from_statuses: Sequence[str], **values: Any
    ) -> dict[str, Any] | None:
        """Atomic compare-and-set on status: returns the updated row, or None when the run
        was not in one of `from_statuses` (someone else moved it first)."""
        await self.ensure()
        for key in ("queued_at", "started_at", "finished_at", "heartbeat_at", "verified_at"):
            if values.get(key) == "now":
                values[key] = func.now()
        try:
            async with self.begin() as conn:
                row = (
                    await conn.execute(
                        update(m.runs)
                        .where(m.runs.c.id == run_id, m.runs.c.status.in_(list(from_statuses)))
                        .values(**values)
                        .returning(*m.runs.c)
                    )
                ).first()
        except IntegrityError as exc:
            if "runs_one_active_per_target" in str(exc):
                current = await self.get_run(run_id)
                raise ActiveRunExists(
                    await self.active_run(current["target"]) if current else None
                ) from None
            raise
        return row_dict(row) if row else None

    async def heartbeat(self, run_id: int, progress: dict[str, Any]) -> dict[str, Any] | None:
        """Record liveness and progress; returns (cancel_requested_by, status)."""
        async with self.begin() as conn:
            row = (
                await conn.execute(
                    update(m.runs)
                    .where(m.runs.c.id == run_id)
                    .values(heartbeat_at=func.now(), progress=progress)
                    .returning(m.runs.c.cancel_requested_by, m.runs.c.status)
                )
            ).first()
        return row_dict(row) if row else None

    async def request_cancel(self, run_id: int, actor: str) -> dict[str, Any] | None:
        async with self.begin() as conn:
            row = (
                await conn.execute(
                    update(m.runs)
                    .where(m.runs.c.id == run_id, m.runs.c.status == m.RUNNING)
                    .values(cancel_requested_by=actor, cancel_requested_at=func.now())
                    .returning(*m.runs.c)
                )
            ).first()
        return row_dict(row) if row else None

    async def stale_runs(self, target: str, stale_after_s: float) -> list[dict[str, Any]]:
        """Queued or running runs whose owner stopped reporting (candidates for recovery)."""
        await self.ensure()
        q = select(m.runs).where(
            m.runs.c.target == target,
            m.runs.c.status.in_(list(m.ACTIVE)),
        )
        async with self.connect() as conn:
            rows = [row_dict(r) for r in (await conn.execute(q)).all()]
            now = (await conn.execute(select(func.now()))).scalar_one()
        out = []
        for r in rows:
            beat: datetime | None = r["heartbeat_at"] or r["queued_at"] or r["created_at"]
            r["stale_s"] = (now - beat).total_seconds() if beat else None
            out.append(r)
        return out

    # -- run log -----------------------------------------------------------------------
    async def add_log(self, entries: Sequence[dict[str, Any]]) -> None:
        if not entries:
            return
        async with self.begin() as conn:
            await conn.execute(insert(m.run_log), list(entries))

    async def get_log(self, run_id: int, *, after_id: int = 0) -> list[dict[str, Any]]:
        async with self.connect() as conn:
            rows = (
                await conn.execute(
                    select(m.run_log)
                    .where(m.run_log.c.run_id == run_id, m.run_log.c.id > after_id)
                    .order_by(m.run_log.c.id)
                )
            ).all()
        return [row_dict(r) for r in rows]

    # -- approvals ---------------------------------------------------------------------
    async def get_approval(self, run_id: int) -> dict[str, Any] | None:
        await self.ensure()
        async with self.connect() as conn:
            row = (
                await conn.execute(select(m.approvals).where(m.approvals.c.run_id == run_id))
            ).first()
        return row_dict(row) if row else None

    async def approvals_for(self, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        if not run_ids:
            return {}
        await self.ensure()
        async with self.connect() as conn:
            rows = await conn.execute(
                select(m.approvals).where(m.approvals.c.run_id.in_(list(run_ids)))
            )
            return {int(r.run_id): row_dict(r) for r in rows}

    async def due_for_expiry(self, target: str, now: datetime) -> list[dict[str, Any]]:
        """Runs still waiting (for approval or execution) past their `expires_at`."""
        await self.ensure()
        r = m.runs.c
        async with self.connect() as conn:
            rows = await conn.execute(
                select(m.runs).where(
                    r.target == target,
                    r.status == m.AWAITING_APPROVAL,
                    r.expires_at.is_not(None),
                    r.expires_at <= now,
                )
            )
            return [row_dict(x) for x in rows]
