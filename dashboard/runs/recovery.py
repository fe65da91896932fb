"""Recovery and expiry: the only writers of runs nobody is acting on.

- A run left queued or running by a process that stopped becomes `interrupted`, with the
  database's actual revision recorded (and an orphaned migration backend terminated).
- A request not approved in time, or an approval not executed in time, becomes
  `expired`. Reading a run never writes: views show a due run as expired
  (`views.effective`) until the sweeper (every few seconds) or the next action on it
  records that.

Every change is a compare-and-set with its log line and audit row: safe when several
dashboard processes sweep the same database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from dashboard.background import cancel_and_wait
from dashboard.runs import locking
from dashboard.runs.context import RunsContext
from dashboard.runs.executor import Executor
from dashboard.runs.outcome import expiry_message, interrupted_message
from dashboard.runs.progress import log_line
from dashboard.runs.records import StaleRun
from dashboard.state import model as sm

log = logging.getLogger(__name__)

STALE_QUEUED_S = 30.0
SWEEP_S = 10.0


class Recovery:
    def __init__(self, ctx: RunsContext, executor: Executor) -> None:
        self.ctx = ctx
        self.executor = executor
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.recover()
        except Exception as exc:
            log.warning("run recovery at start-up failed (will retry): %s", exc)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="dashboard-run-sweeper")

    async def stop(self) -> None:
        await cancel_and_wait(self._sweeper)
        self._sweeper = None

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.recover()
                await self.expire_due()
            except Exception as exc:
                log.debug("run sweep failed: %s", exc)

    # -- interrupted runs --------------------------------------------------------------
    async def recover(self) -> list[int]:
        ctx = self.ctx
        recovered: list[int] = []
        for stale in await ctx.repo.stale(ctx.target.name):
            r = stale.run
            if self.executor.is_local(r.id):
                continue
            if r.status == sm.RUNNING:
                if await self._owner_alive(stale):
                    continue
            elif (stale.stale_s or 0) < STALE_QUEUED_S:
                continue
            terminated = await ctx.signal(r.migrate_pid, r.migrate_backend_start, terminate=True)
            read = await ctx.read_current()
            restarted = await self._server_restarted_since(r.started_at or r.queued_at)
            message = interrupted_message(r.owner, read.current, terminated, restarted)
            moved = await ctx.repo.transition(
                r.id,
                (sm.QUEUED, sm.RUNNING),
                {
                    "status": sm.INTERRUPTED,
                    "finished_at": "now",
                    "verified_revs": read.current,
                    "verified_at": "now",
                    "error": message,
                    "error_detail": {"owner": r.owner, "terminated_backend": terminated},
                },
                log=[log_line(r.id, "interrupted", message)],
                audit=[
                    ctx.event(
                        "dashboard",
                        None,
                        "run.recover",
                        "interrupted",
                        {"run_id": r.id, "verified": read.current},
                    )
                ],
            )
            if moved is not None:
                recovered.append(r.id)
                ctx.schema_changed()
        return recovered

    async def _server_restarted_since(self, since: datetime | None) -> datetime | None:
        """The server's start time, when it is later than `since` (a restart mid-run)."""
        if since is None:
            return None
        async with self.ctx.target_engine.connect() as conn:
            started = await locking.server_started(conn)
            await conn.rollback()
        return started if started > since else None

    async def _owner_alive(self, stale: StaleRun) -> bool:
        pid, started = stale.run.lock_pid, stale.run.lock_backend_start
        if not pid or started is None:
            return (stale.stale_s or 0) < STALE_QUEUED_S
        async with self.ctx.target_engine.connect() as conn:
            current = await locking.backend_start(conn, pid)
            await conn.rollback()
        return current is not None and current == started

    # -- expiry ------------------------------------------------------------------------
    async def expire_due(self) -> list[int]:
        """Requests not approved in time, and approvals not executed in time, become
        `expired` (compare-and-set on status: safe across processes)."""
        ctx = self.ctx
        expired: list[int] = []
        ttl = ctx.settings.approval_ttl_minutes
        for r in await ctx.repo.due_for_expiry(ctx.target.name, ctx.clock()):
            assert r.expires_at is not None
            message = expiry_message(r.approved_by, r.expires_at, ttl)
            moved = await ctx.repo.transition(
                r.id,
                (sm.AWAITING_APPROVAL,),
                {
                    "status": sm.EXPIRED,
                    "finished_at": "now",
                    "error": message,
                    "verified_revs": None,
                },
                log=[log_line(r.id, "expired", message)],
                audit=[
                    ctx.event(
                        "dashboard",
                        None,
                        "run.expire",
                        "expired",
                        {
                            "run_id": r.id,
                            "requested_by": r.requested_by,
                            "approved_by": r.approved_by,
                            "expires_at": r.expires_at.isoformat(),
                        },
                    )
                ],
            )
            if moved is not None:
                expired.append(r.id)
        return expired
