"""Executing a queued run: lock, re-check, apply on the migration worker, prove the commit.

1. A *lock connection* (NullPool, its own backend, on the serving loop) takes the
   advisory lock keyed on the database + version table, re-reads the version table, and
   refuses the run if the database is not where the request said it was
   (compare-and-swap) or the scripts no longer give the same plan.
2. On the migration worker's own thread and loop (`worker.py`), a brand-new *migration
   connection* (NullPool, application_name dashboard-migrate, lock/statement timeouts as
   server settings) has executed nothing when Alembic is configured on it inside
   `AsyncConnection.run_sync` (`migrations/apply.py`). Its backend pid is recorded
   before Alembic starts, so recovery can stop an orphaned backend.
3. Progress comes from Alembic's `on_version_apply` and a `before_cursor_execute`
   listener; a heartbeat on the serving loop stores it, samples what the migration
   backend waits for, and notices cancel requests made by any dashboard process.
4. Proof of commit: the version table is read on a fresh connection and must equal the
   plan's target heads (`outcome.decide_finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dashboard.audit.log import AuditEvent
from dashboard.background import cancel_and_wait
from dashboard.db import create_migration_engine, describe_error, is_unavailable
from dashboard.migrations.catalog import read_schema_warnings
from dashboard.migrations.leftovers import SchemaWarning, leftover_warnings, merge_warnings
from dashboard.migrations.plan import Plan, PlanError, make_plan, same_steps
from dashboard.migrations.status import read_version_table
from dashboard.review.gate import StatementGate, StatementRefused
from dashboard.review.pins import ReviewPins
from dashboard.runs import locking
from dashboard.runs.context import RunsContext
from dashboard.runs.ddl_queries import read_ddl_sample
from dashboard.runs.errors import RunError, RunUnavailable
from dashboard.runs.migration_job import Applied, MigrationJob, apply_on_worker
from dashboard.runs.outcome import (
    BlockerReport,
    FinishFacts,
    RetriesExhausted,
    decide_finish,
    is_lock_timeout,
    is_unavailable_error,
    relation_of,
)
from dashboard.runs.pileup import PileupLimits
from dashboard.runs.progress import LiveRun, log_line, one_line
from dashboard.runs.records import Run
from dashboard.runs.worker import call_on
from dashboard.state import model as sm

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.3
# When the database goes away mid-run, the end is recorded once it answers again.
FINISH_RETRY_FIRST_S = 0.5
FINISH_RETRY_MAX_S = 5.0
FINISH_RETRY_S = 600.0


class Executor:
    """Runs queued runs of one target as background tasks of the serving loop."""

    def __init__(self, ctx: RunsContext) -> None:
        self.ctx = ctx
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.live: dict[int, LiveRun] = {}

    def is_local(self, run_id: int) -> bool:
        return run_id in self.tasks or run_id in self.live

    def launch(self, run_id: int) -> None:
        task = asyncio.create_task(self._guarded(run_id), name=f"migration-run-{run_id}")
        self.tasks[run_id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(run_id, None))

    async def wait(self, run_id: int, within_s: float = 60.0) -> None:
        task = self.tasks.get(run_id)
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), within_s)

    async def stop(self) -> None:
        if self.tasks:
            _done, pending = await asyncio.wait(list(self.tasks.values()), timeout=15)
            for t in pending:
                t.cancel()

    async def signal(self, run: Run) -> bool:
        live = self.live.get(run.id)
        pid = live.migrate_pid if live else run.migrate_pid
        started = live.migrate_backend_start if live else run.migrate_backend_start
        return await self.ctx.signal(pid, started, terminate=False)

    # -- one run -----------------------------------------------------------------------
    async def _guarded(self, run_id: int) -> None:
        try:
            await self._execute(run_id)
        except Exception as exc:
            log.exception("run %s: runner error", run_id)
            with contextlib.suppress(Exception):
                message = f"runner error: {one_line(str(exc), 300)}"
                await self.ctx.repo.transition(
                    run_id,
                    (sm.QUEUED, sm.RUNNING),
                    {"status": sm.FAILED, "finished_at": "now", "error": message},
                    log=[log_line(run_id, sm.FAILED, message)],
                )
        finally:
            self.live.pop(run_id, None)
            self.ctx.schema_changed()

    async def _refuse(self, run_id: int, message: str, **detail: Any) -> None:
        await self.ctx.repo.transition(
            run_id,
            (sm.QUEUED,),
            {
                "status": sm.FAILED,
                "finished_at": "now",
                "error": message,
                "error_detail": detail or None,
            },
            log=[log_line(run_id, "refused", message)],
            audit=[
                self.ctx.event(
                    "dashboard", None, "run.start", "refused", {"run_id": run_id, "reason": message}
                )
            ],
        )

    async def _execute(self, run_id: int) -> None:
        ctx = self.ctx
        run = await ctx.repo.get(run_id)
        if run is None or run.status != sm.QUEUED:
            return
        plan = Plan.from_json(run.plan)
        live = LiveRun(run_id=run_id, plan=plan, requested_by=run.requested_by)
        live.cancel_requested_by = run.cancel_requested_by
        self.live[run_id] = live
        lock_engine = create_migration_engine(ctx.url)
        try:
            async with lock_engine.connect() as lock_conn:
                sd = await self._lock_and_check(lock_conn, run, plan)
                if sd is None:
                    return
                lock_pid, lock_started = await locking.self_backend(lock_conn)
                await lock_conn.commit()
                s = ctx.settings
                live.started_mono = time.monotonic()
                started = await ctx.repo.transition(
                    run_id,
                    (sm.QUEUED,),
                    {
                        "status": sm.RUNNING,
                        "started_at": "now",
                        "heartbeat_at": "now",
                        "owner": ctx.owner,
                        "lock_pid": lock_pid,
                        "lock_backend_start": lock_started,
                    },
                    log=[
                        log_line(
                            run_id,
                            "started",
                            f"started by {ctx.owner}: {len(plan.steps)} revision(s), "
                            f"{plan.from_label} -> {plan.confirm_value}; lock_timeout "
                            f"{s.lock_timeout_ms} ms per attempt, {s.lock_retries} attempt(s) "
                            f"per statement, pile-up watchdog at {s.pileup_max_waiters} "
                            f"waiters or {s.pileup_max_wait_ms} ms; statement_timeout "
                            f"{s.statement_timeout_ms or 'none'}"
                            f"{'; env.py mode' if s.run_env_py else ''}",
                        )
                    ],
                    audit=[
                        ctx.event(
                            run.requested_by, None, "run.start", "running", {"run_id": run_id}
                        )
                    ],
                )
                if started is None:
                    return  # cancelled while queued
                gate = await self._gate(run)
                applied = await self._apply(lock_conn, sd, plan, live, gate)
                await self._finish(run, plan, live, applied, lock_engine)
                with contextlib.suppress(Exception):
                    a, b = locking.migration_lock_key(ctx.target)
                    await lock_conn.execute(locking.UNLOCK, {"a": a, "b": b})
                    await lock_conn.commit()
        finally:
            live.finished = True
            await lock_engine.dispose()

    async def _lock_and_check(
        self, lock_conn: AsyncConnection, run: Run, plan: Plan
    ) -> ScriptDirectory | None:
        """Take the migration lock and re-check the plan; None (run refused) otherwise."""
        ctx = self.ctx
        await lock_conn.execute(
            locking.SET_APP_NAME,
            {"name": f"dashboard-lock run {run.id} by {run.requested_by}"[:63]},
        )
        got = await locking.try_lock(lock_conn, ctx.target)
        holder = None if got else await locking.lock_holder(lock_conn, ctx.target)
        read = await lock_conn.run_sync(read_version_table, ctx.target)
        await lock_conn.commit()
        if not got:
            what = holder.describe(ctx.target) if holder else "another migration holds the lock"
            await self._refuse(run.id, f"refused: {what}")
            return None
        if read.current != list(plan.from_heads):
            await self._refuse(
                run.id,
                f"refused: the database moved to {', '.join(read.current) or 'base'} "
                f"since the run was requested (expected {plan.from_label}); nothing ran",
                actual_current=read.current,
                expected_current=list(plan.from_heads),
            )
            return None
        try:
            sd = await ctx.load_scripts()
            replanned = await asyncio.to_thread(
                make_plan, sd, read.current, plan.direction, plan.target, fresh_files=True
            )
        except (RunError, PlanError) as exc:
            await self._refuse(run.id, f"refused: {exc}")
            return None
        if not same_steps(plan, replanned):
            await self._refuse(
                run.id,
                "refused: the migration scripts changed since the plan was made "
                f"(now {', '.join(replanned.revisions)}); request the run again",
            )
            return None
        return sd

    async def _gate(self, run: Run) -> StatementGate | None:
        """The statement pins the run executes under: the approval's, or (no approval
        needed) what the requester was shown; None for a run requested before pins."""
        approval = await self.ctx.repo.approval(run.id)
        doc = approval.statements if approval is not None and approval.statements else run.review
        return ReviewPins.from_json(doc).gate if doc else None

    async def _apply(
        self,
        lock_conn: AsyncConnection,
        sd: ScriptDirectory,
        plan: Plan,
        live: LiveRun,
        gate: StatementGate | None,
    ) -> Applied:
        """Run the plan on the migration worker; heartbeat here while it runs."""
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        beats: list[asyncio.Task[None]] = []

        async def on_connected(pid: int) -> None:
            live.migrate_pid = pid
            live.migrate_backend_start = await locking.backend_start(lock_conn, pid)
            await lock_conn.commit()
            await ctx.repo.transition(
                live.run_id,
                (sm.RUNNING,),
                {"migrate_pid": pid, "migrate_backend_start": live.migrate_backend_start},
            )
            beats.append(
                asyncio.create_task(self._heartbeat(live), name=f"run-{live.run_id}-heartbeat")
            )

        s = ctx.settings
        job = MigrationJob(
            url=ctx.url,
            lock_timeout_ms=s.lock_timeout_ms,
            statement_timeout_ms=s.statement_timeout_ms,
            sd=sd,
            plan=plan,
            target=ctx.target,
            live=live,
            run_env_py=s.run_env_py,
            connected=lambda pid: call_on(loop, lambda: on_connected(pid)),
            gate=gate,
            lock_retries=s.lock_retries,
            pileup=PileupLimits(s.pileup_max_waiters, s.pileup_max_wait_ms),
        )
        try:
            return await ctx.worker.run(apply_on_worker, job)
        finally:
            for beat in beats:
                await cancel_and_wait(beat)

    # -- heartbeat -----------------------------------------------------------------------
    async def _heartbeat(self, live: LiveRun) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat_once(live)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("run %s heartbeat failed: %s", live.run_id, exc)

    async def _beat_once(self, live: LiveRun) -> None:
        ctx = self.ctx
        if live.migrate_pid:
            async with ctx.target_engine.connect() as conn:
                wait = await locking.lock_wait(conn, live.migrate_pid)
                sample = await read_ddl_sample(conn, live.migrate_pid)
                # never left open: a concurrent index build waits for old transactions
                await conn.rollback()
            live.ddl = live.ddl_tracker.observe(sample, time.monotonic())
            live.lock_wait = wait
            if wait is not None:
                live.last_lock_wait = wait
        lines = live.take_log()
        try:
            cancel_by = await ctx.repo.heartbeat(live.run_id, live.progress(), lines)
        except Exception:
            live.put_back(lines)
            raise
        if cancel_by and live.request_cancel(cancel_by):
            run = await ctx.repo.get(live.run_id)
            if run is not None:
                await self.signal(run)

    # -- the end -------------------------------------------------------------------------
    async def _finish(
        self, run: Run, plan: Plan, live: LiveRun, applied: Applied, engine: AsyncEngine
    ) -> None:
        """Prove where the database stands and record the end. When the database went away
        (the run's connections were cut), keep trying until it answers again: the end is
        recorded by this process, with what happened, not guessed later by recovery."""
        statement = live.current_statement
        live.current_statement = None
        if live.refused is not None and not isinstance(applied.error, StatementRefused):
            # the revision caught the refusal; the run still fails for it
            applied = Applied(StatementRefused(live.refused), applied.left_in_transaction)
        blocker = exhausted = None
        if is_lock_timeout(applied.error) or live.exhausted is not None:
            blocker = await self._blocker_report(live, statement)
        if live.exhausted is not None and applied.error is not None and live.retries:
            used, reason = live.exhausted
            exhausted = RetriesExhausted(
                used, reason, self.ctx.settings.lock_timeout_ms, live.retries.summary()
            )
        delay, deadline = FINISH_RETRY_FIRST_S, time.monotonic() + FINISH_RETRY_S
        while True:
            try:
                await self._finish_once(
                    run, plan, live, applied, engine, statement, blocker, exhausted
                )
                return
            except RunUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("run %s: cannot record its end yet (%s); retrying", run.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, FINISH_RETRY_MAX_S)

    async def _finish_once(
        self,
        run: Run,
        plan: Plan,
        live: LiveRun,
        applied: Applied,
        engine: AsyncEngine,
        statement: str | None,
        blocker: BlockerReport | None,
        exhausted: RetriesExhausted | None = None,
    ) -> None:
        ctx = self.ctx
        verified: list[str] | None = None
        verify_error = None
        warnings: list[SchemaWarning] = []
        try:
            # Proof of commit: a brand-new connection (NullPool) reads the version table.
            async with engine.connect() as fresh:
                read = await fresh.run_sync(read_version_table, ctx.target)
                await fresh.rollback()
                warnings = await self._left_behind(fresh, live, applied)
            verified = read.current
        except Exception as exc:
            if is_unavailable(exc) and is_unavailable_error(applied.error):
                # the database is still away: nothing to prove or record yet
                raise RunUnavailable(describe_error(exc), code="unavailable") from exc
            verify_error = one_line(str(exc), 300)
        fin = decide_finish(
            FinishFacts(
                error=applied.error,
                expected=plan.to_heads,
                confirm_value=plan.confirm_value,
                verified=verified,
                verify_error=verify_error,
                left_in_transaction=applied.left_in_transaction,
                cancel_requested_by=live.cancel_requested_by,
                warnings=tuple(w.message for w in warnings),
                current_revision=live.current_revision,
                current_statement=statement,
                blocker=blocker,
                exhausted=exhausted,
            )
        )
        if fin.status != sm.SUCCEEDED:
            live.mark_current_step("failed" if fin.status == sm.FAILED else "cancelled")
        live.finished = True
        final = log_line(
            run.id,
            fin.status,
            fin.message,
            revision=live.current_revision if fin.status != sm.SUCCEEDED else None,
        )
        lines = live.take_log()
        try:
            await ctx.repo.transition(
                run.id,
                (sm.RUNNING,),
                {
                    "status": fin.status,
                    "finished_at": "now",
                    "heartbeat_at": "now",
                    "verified_at": "now" if verified is not None else None,
                    "verified_revs": verified,
                    "error": None if fin.status == sm.SUCCEEDED else fin.message,
                    "error_detail": fin.detail or None,
                    "progress": live.progress(),
                    "attempts": live.retries.attempts if live.retries else 1,
                    "warnings": [w.to_json() for w in warnings],
                },
                log=[*lines, final],
                audit=[
                    *self._refusal_events(run, live),
                    ctx.event(
                        run.requested_by,
                        None,
                        "run.finish",
                        fin.status,
                        {"run_id": run.id, "verified": verified, "message": fin.message},
                    ),
                ],
            )
        except BaseException:
            live.put_back(lines)
            raise
        log.info("run %s %s: %s", run.id, fin.status, fin.message)

    async def _left_behind(
        self, conn: AsyncConnection, live: LiveRun, applied: Applied
    ) -> list[SchemaWarning]:
        """What the run left that needs a person: invalid indexes and NOT VALID constraints
        in the catalog now, and what a failed revision's non-transactional steps
        committed. Never fails the finish: a catalog that cannot be read gives a warning."""
        try:
            found = await read_schema_warnings(
                conn, exclude_schemas=self.ctx.settings.own_schemas_in_target
            )
            await conn.rollback()
        except Exception as exc:
            log.warning("run %s: cannot read the catalog for leftovers: %s", live.run_id, exc)
            return [
                SchemaWarning(
                    "catalog_unreadable",
                    "catalog",
                    f"what the run left behind could not be checked: {one_line(str(exc), 200)}",
                )
            ]
        leftovers: list[SchemaWarning] = []
        failed_rev = live.current_revision if applied.error is not None else None
        if failed_rev is not None:
            leftovers = leftover_warnings(
                failed_rev, [sql for rev, sql in live.committed_outside if rev == failed_rev]
            )
        return merge_warnings(leftovers, [w for w in found if not w.in_progress])

    def _refusal_events(self, run: Run, live: LiveRun) -> list[AuditEvent]:
        refused = live.refused
        if refused is None:
            return []
        return [
            self.ctx.event(
                run.requested_by,
                None,
                "run.statement_refused",
                "refused",
                {
                    "run_id": run.id,
                    "revision": refused.revision,
                    "statement": refused.sql[:2000],
                    "fingerprint": refused.fingerprint,
                    "message": refused.message,
                },
            )
        ]

    async def _blocker_report(self, live: LiveRun, statement: str | None) -> BlockerReport:
        """Who held the lock the migration waited for: sampled during the wait, or, failing
        that, whoever still holds a lock on the statement's table."""
        sample = live.last_lock_wait
        relation = sample.relation() if sample else None
        blockers = list(sample.blockers) if sample else []
        if not blockers:
            relation = relation or relation_of(statement)
            if relation and live.migrate_pid:
                with contextlib.suppress(Exception):
                    async with self.ctx.target_engine.connect() as conn:
                        blockers = await locking.relation_holders(conn, relation, live.migrate_pid)
                        await conn.rollback()
        return BlockerReport(relation, blockers, sample.mode() if sample else None)
