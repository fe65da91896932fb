"""The runs use cases for one target: plan and preview, request, start, cancel, read.

Whether a new run needs approval is decided in one place, `initial_status()` (the rule
itself is `approvals.rules.needs_approval`); approve / reject / execute live in
`approvals.service`, which starts an approved run with `RunService.enqueue()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.approvals.rules import deadline, needs_approval
from dashboard.audit.log import AuditEvent, AuditLog
from dashboard.migrations.plan import Plan, PlanError, make_plan
from dashboard.migrations.preview import Preview, render_preview
from dashboard.migrations.status import StatusService, VersionTableRead
from dashboard.review.pins import (
    InvalidAcknowledgement,
    ReviewPins,
    missing_data_acknowledgements,
    parse_acknowledgements,
)
from dashboard.review.report import Review
from dashboard.review.service import ReviewService
from dashboard.runs.context import RunsContext
from dashboard.runs.errors import RunConflict, RunError, RunInvalid, RunNotFound
from dashboard.runs.executor import Executor
from dashboard.runs.progress import log_line, now
from dashboard.runs.records import LogEntry, NewLogLine, Run
from dashboard.runs.recovery import Recovery
from dashboard.runs.repo import RunRepo
from dashboard.runs.views import effective, log_json, run_json
from dashboard.settings import Settings, same_database
from dashboard.state import model as sm
from dashboard.state.store import StateStore, create_state_engine
from dashboard.targets import Target

log = logging.getLogger(__name__)

# The runs' own pool on the target when the dashboard's schema lives in another database
TARGET_APP_NAME = "dashboard-runs"


def initial_status(settings: Settings, plan: Plan) -> str:
    """THE approval decision for a new run: `awaiting_approval` or `queued`.

    Four-eyes rule: upgrades need approval when DASHBOARD_REQUIRE_APPROVAL is on (the
    default); downgrades always do.
    """
    if needs_approval(settings.require_approval, plan.direction):
        return sm.AWAITING_APPROVAL
    return sm.QUEUED


class RunService:
    """Requests, runs, cancels and reads migration runs of one target."""

    def __init__(
        self,
        settings: Settings,
        target: Target,
        url: str,
        state: StateStore,
        *,
        status: StatusService | None = None,
        audit: AuditLog | None = None,
        target_engine: AsyncEngine | None = None,
    ) -> None:
        audit = audit or AuditLog(state)
        self.state = state
        # The target's catalog (version table, advisory lock, pg_locks) is read on the state
        # store's engine when both live in one database; with DASHBOARD_STATE_DATABASE_URL
        # the target gets a small pool of its own (disposed by stop()).
        self._own_target_engine: AsyncEngine | None = None
        if target_engine is None:
            if same_database(state.url, url):
                target_engine = state.raw_engine
            else:
                target_engine = self._own_target_engine = create_state_engine(
                    url, application_name=TARGET_APP_NAME
                )
        self.ctx = RunsContext(
            settings=settings,
            target=target,
            url=url,
            repo=RunRepo(state, audit),
            audit=audit,
            target_engine=target_engine,
            status=status,
        )
        self.repo = self.ctx.repo
        self.executor = Executor(self.ctx)
        self.recovery = Recovery(self.ctx, self.executor)
        self._request_lock = asyncio.Lock()
        self.review = ReviewService(settings, target, url, self.ctx.worker, self.ctx.target_engine)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def target(self) -> Target:
        return self.ctx.target

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.ctx.clock

    @clock.setter
    def clock(self, fn: Callable[[], datetime]) -> None:
        self.ctx.clock = fn

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.recovery.start()

    async def stop(self) -> None:
        await self.recovery.stop()
        for run_id, live in list(self.executor.live.items()):
            if not live.finished:
                with contextlib.suppress(Exception):
                    await self.cancel(run_id, actor="dashboard shutdown", address=None)
        await self.executor.stop()
        await asyncio.to_thread(self.ctx.worker.stop)
        if self._own_target_engine is not None:
            await self._own_target_engine.dispose()

    async def wait(self, run_id: int, within_s: float = 60.0) -> None:
        """Wait for this process's task of `run_id` (tests, benchmark)."""
        await self.executor.wait(run_id, within_s)

    # -- planning ------------------------------------------------------------------------
    async def read_current(self) -> VersionTableRead:
        return await self.ctx.read_current()

    async def load_scripts(self) -> ScriptDirectory:
        return await self.ctx.load_scripts()

    async def plan(
        self, direction: str, target: str, current: Sequence[str] | None = None
    ) -> tuple[ScriptDirectory, Plan]:
        sd = await self.ctx.load_scripts()
        if current is None:
            current = (await self.ctx.read_current()).current
        try:
            return sd, await asyncio.to_thread(make_plan, sd, current, direction, target)
        except PlanError as exc:
            raise RunInvalid(exc.message, code=exc.code) from None

    async def render(self, sd: ScriptDirectory, plan: Plan) -> Preview:
        """The offline SQL render, on the migration worker (a revision's Python may be slow)."""
        return await self.ctx.worker.call(render_preview, sd, plan, self.ctx.target)

    async def reviewed(
        self, direction: str, target: str, current: Sequence[str] | None = None
    ) -> Review:
        """The review of a plan with its live context (`/api/review`, the confirmation page)."""
        sd, plan = await self.plan(direction, target, current)
        return await self.review_of(sd, plan, live=True)

    async def reviewed_run(self, run: Run) -> Review:
        """The review of a requested run's plan, with its live context (the approval page)."""
        return await self.review_of(await self.load_scripts(), Plan.from_json(run.plan), live=True)

    async def review_of(
        self, sd: ScriptDirectory, plan: Plan, preview: Preview | None = None, *, live: bool
    ) -> Review:
        """The review of `plan` (its offline render reused when given); with the sizes and
        live conflicts when `live`."""
        rendered = preview if preview is not None else await self.render(sd, plan)
        review = await self.review.build(sd, plan, rendered)
        return await self.review.live(review) if live else review

    async def preview(
        self, direction: str, target: str, current: Sequence[str] | None = None
    ) -> Preview:
        sd, plan = await self.plan(direction, target, current)
        return await self.render(sd, plan)

    # -- requests ------------------------------------------------------------------------
    async def request(
        self,
        *,
        actor: str,
        address: str | None,
        direction: str,
        target: str,
        expected_current: Sequence[str],
        sql_sha256: str | None = None,
        acknowledge: object = None,
    ) -> Run:
        """Validate, plan, preview and record a run; queue it unless approval is needed.

        `sql_sha256`, when given (the confirmation form), must equal the SQL about to be
        recorded: the operator confirmed exactly that SQL.
        """
        async with self._request_lock:
            try:
                return await self._request(
                    actor, address, direction, target, expected_current, sql_sha256, acknowledge
                )
            except RunError as exc:
                await self.ctx.audit.record(
                    self.ctx.event(
                        actor,
                        address,
                        "run.request",
                        "refused",
                        {
                            "direction": direction,
                            "target": target,
                            "reason": exc.message,
                            "code": exc.code,
                        },
                    )
                )
                raise

    async def _request(
        self,
        actor: str,
        address: str | None,
        direction: str,
        target: str,
        expected_current: Sequence[str],
        sql_sha256: str | None,
        acknowledge: object = None,
    ) -> Run:
        ctx = self.ctx
        await ctx.repo.ensure()
        read = await ctx.read_current()
        expected = sorted(set(expected_current))
        if read.current != expected:
            raise RunConflict(
                f"the database is at {', '.join(read.current) or 'base (nothing applied)'}, "
                f"not at {', '.join(expected) or 'base'} as the request expected; "
                "nothing was run. Reload the page to see where it stands.",
                code="moved",
                extra={"actual_current": read.current, "expected_current": expected},
            )
        sd, plan = await self.plan(direction, target, read.current)
        preview = await self.render(sd, plan)
        if sql_sha256 is not None and sql_sha256 != preview.sql_sha256:
            raise RunConflict(
                "the SQL changed since it was shown (SHA-256 differs); review it again",
                code="sql_changed",
                extra={"sql_sha256": preview.sql_sha256},
            )
        await ctx.refuse_if_locked()  # before the rehearsal: "in progress" answers at once
        review = await self.review_of(sd, plan, preview, live=False)
        try:
            acks = parse_acknowledgements(acknowledge, review, actor)
        except InvalidAcknowledgement as exc:
            raise RunError(str(exc), code="invalid_acknowledgement") from None  # 400
        await ctx.refuse_if_locked()
        status = initial_status(ctx.settings, plan)
        missing = missing_data_acknowledgements(review, acks)
        if status == sm.QUEUED and missing:
            raise RunConflict(
                f"revision(s) {', '.join(missing)} depend on data: the statements they send on "
                "the real data could not all be seen ahead. Acknowledge that (with a reason) to "
                "let them send data statements (SELECT, INSERT, UPDATE, DELETE) not shown here; "
                "schema changes not shown are refused either way",
                code="acknowledgement_required",
                extra={"data_dependent": missing},
            )
        pins = ReviewPins.of(review, acks)
        values: dict[str, Any] = {
            "target": ctx.target.name,
            "direction": plan.direction,
            "target_spec": plan.target,
            "to_rev": plan.confirm_value,
            "to_revs": list(plan.to_heads),
            "from_revs": list(plan.from_heads),
            "plan": {**plan.to_json(), "warnings": preview.warnings},
            "sql_sha256": preview.sql_sha256,
            "sql": preview.sql,
            "status": status,
            "requested_by": actor,
            "requested_from": address,
            "review": pins.to_json(),
        }
        if status == sm.QUEUED:
            values.update(owner=ctx.owner, queued_at="now", heartbeat_at="now")
        else:
            values["expires_at"] = deadline(ctx.clock(), ctx.settings.approval_ttl_minutes)

        def describe(run: Run) -> tuple[list[NewLogLine], list[AuditEvent]]:
            message = (
                f"{actor} requested {plan.direction} {plan.from_label} -> "
                f"{plan.confirm_value} ({len(plan.steps)} revision(s)); SQL sha256 "
                f"{preview.sql_sha256[:16]}…; review: risk {review.risk}, "
                f"{len(review.statements)} statement(s) "
                f"{'rehearsed' if review.exact else 'from the offline render (not exact)'}"
                + (
                    f", data-dependent: {', '.join(review.data_dependent)}"
                    if review.data_dependent
                    else ""
                )
                + (f", {len(acks)} acknowledgement(s)" if acks else "")
                + f"; status {status}"
            )
            event = ctx.event(
                actor,
                address,
                "run.request",
                "created",
                {
                    "run_id": run.id,
                    "direction": plan.direction,
                    "target": plan.target,
                    "to": list(plan.to_heads),
                    "sql_sha256": preview.sql_sha256,
                    "status": status,
                    "risk": review.risk,
                    "exact": review.exact,
                    "acknowledgements": [a.to_json() for a in acks],
                },
            )
            return [log_line(run.id, "requested", message)], [event]

        run = await ctx.repo.insert(values, describe)
        if status == sm.QUEUED:
            self.executor.launch(run.id)
        return run

    async def enqueue(
        self,
        run_id: int,
        *,
        actor: str,
        address: str | None = None,
        from_statuses: Sequence[str] = (sm.AWAITING_APPROVAL,),
        log_message: str | None = None,
    ) -> Run:
        """Start a run that was waiting (after approval). Atomic; RunConflict if it moved.
        `log_message` goes into the run log with the move."""
        ctx = self.ctx
        await ctx.repo.ensure()
        await ctx.refuse_if_locked()
        row = await ctx.repo.transition(
            run_id,
            from_statuses,
            {"status": sm.QUEUED, "queued_at": "now", "heartbeat_at": "now", "owner": ctx.owner},
            log=[log_line(run_id, "executed", log_message)] if log_message else [],
            audit=[ctx.event(actor, address, "run.execute", "queued", {"run_id": run_id})],
        )
        if row is None:
            current = await ctx.repo.get(run_id)
            if current is None:
                raise RunNotFound(f"run {run_id} does not exist", code="not_found")
            raise RunConflict(
                f"run {run_id} is {current.status}; it cannot be started",
                code="state",
                extra={"status": current.status},
            )
        self.executor.launch(run_id)
        return row

    async def cancel(self, run_id: int, *, actor: str, address: str | None) -> Run:
        ctx = self.ctx
        run = await self.record(run_id)
        if run.status in (sm.AWAITING_APPROVAL, sm.QUEUED):
            moved = await ctx.repo.transition(
                run_id,
                (sm.AWAITING_APPROVAL, sm.QUEUED),
                {
                    "status": sm.CANCELLED,
                    "finished_at": "now",
                    "cancel_requested_by": actor,
                    "error": f"cancelled by {actor} before it started; nothing ran",
                    "verified_revs": run.from_revs,
                },
                log=[log_line(run_id, "cancelled", f"cancelled by {actor} before it started")],
                audit=[ctx.event(actor, address, "run.cancel", "cancelled", {"run_id": run_id})],
            )
            if moved is not None:
                return moved
            run = await self.record(run_id)
        if run.status != sm.RUNNING:
            raise RunConflict(
                f"run {run_id} is already {run.status}; there is nothing to cancel",
                code="state",
                extra={"status": run.status},
            )
        marked = await ctx.repo.request_cancel(run_id, actor) or run
        live = self.executor.live.get(run_id)
        if live is not None:
            live.request_cancel(actor)
        signalled = await self.executor.signal(marked)
        await ctx.repo.append(
            audit=[
                ctx.event(
                    actor,
                    address,
                    "run.cancel",
                    "requested",
                    {"run_id": run_id, "signalled": signalled},
                )
            ]
        )
        return marked

    # -- reading (never writes) ----------------------------------------------------------
    async def record(self, run_id: int) -> Run:
        """The run as stored (RunNotFound when there is none)."""
        run = await self.ctx.repo.get(run_id)
        if run is None:
            raise RunNotFound(f"run {run_id} does not exist", code="not_found")
        return run

    def _live_progress(self, run: Run) -> dict[str, Any] | None:
        live = self.executor.live.get(run.id)
        return live.progress() if live is not None and not live.finished else None

    def _effective(self, run: Run) -> Run:
        return effective(run, self.ctx.clock(), self.ctx.settings.approval_ttl_minutes)

    async def get(self, run_id: int, *, with_log: bool = True) -> dict[str, Any]:
        await self.ctx.repo.ensure()
        run = self._effective(await self.record(run_id))
        entries = await self.ctx.repo.log_after(run_id) if with_log else None
        approval = await self.ctx.repo.approval(run_id)
        data = run_json(
            run, approval, now=now(), live_progress=self._live_progress(run), log=entries
        )
        data["sql"] = run.sql
        return data

    async def page(self, run_id: int, log_lines: int) -> tuple[dict[str, Any], int]:
        """A run for its page: the last `log_lines` log lines and the log's length."""
        data = await self.get(run_id, with_log=False)
        tail, total = await self.ctx.repo.log_tail(run_id, log_lines)
        data["log"] = [log_json(e) for e in tail]
        return data, total

    async def log_after(
        self, run_id: int, after: int, limit: int = 1000
    ) -> tuple[list[LogEntry], int]:
        """Log lines after sequence number `after`, and the last sequence number known."""
        await self.record(run_id)
        entries = await self.ctx.repo.log_after(run_id, after, limit)
        return entries, entries[-1].id if entries else after

    async def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        await self.ctx.repo.ensure()
        runs = [
            self._effective(r)
            for r in await self.ctx.repo.recent(limit=limit, target=self.target.name)
        ]
        approvals = await self.ctx.repo.approvals_for([r.id for r in runs])
        t = now()
        return [
            run_json(r, approvals.get(r.id), now=t, live_progress=self._live_progress(r))
            for r in runs
        ]

    async def overview(self) -> dict[str, Any]:
        """The Overview page's runs card (templates/runs/_card.html)."""
        try:
            runs = await self.list_runs(limit=5)
        except RunError as exc:
            return {"runs_card": {"error": exc.message, "runs": [], "active": None}}
        active = next((r for r in runs if r["status"] in sm.OPEN), None)
        return {"runs_card": {"error": None, "runs": runs, "active": active}}
