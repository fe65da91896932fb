"""The guarded migration runner: plans become durable runs, runs become background jobs.

How a run executes (`Runner._execute`):

1. A *lock connection* (NullPool, its own backend) takes the advisory lock keyed on the
   database + version table (`locking.py`), re-reads the version table, and refuses the
   run if the database is not where the request said it was (compare-and-swap) or the
   scripts no longer give the same plan.
2. A second, brand-new *migration connection* (`create_migration_engine`: NullPool,
   application_name dashboard-migrate, lock/statement timeouts set as server settings)
   has executed nothing when Alembic is configured on it inside `AsyncConnection.run_sync`.
   The dashboard drives `EnvironmentContext` itself with `transaction_per_migration=True`
   and the plan's own steps, so Alembic owns and commits one transaction per revision,
   `autocommit_block()` works, and the project's env.py (often written for a sync
   engine) is never executed. Opt-in (`DASHBOARD_RUN_ENV_PY`): the project's env.py
   runs, and must use `config.attributes["connection"]`.
3. Progress comes from Alembic's `on_version_apply` and a SQLAlchemy
   `before_cursor_execute` listener; a heartbeat task stores it, samples what the
   migration backend waits for (lock blockers), and notices cancel requests made by any
   dashboard process.
4. Proof of commit: the version table is read on a fresh connection and must equal the
   plan's target heads; anything else fails the run loudly.

Whether a new run needs approval is decided in exactly one place, `initial_status()`
(the rule itself is `dashboard.approvals.rules.needs_approval`); approve / reject / execute
live in `dashboard.approvals.service`, which starts an approved run with
`Runner.enqueue()`. Requests waiting for approval, and approvals waiting to be executed,
expire (`expire_due()`, called lazily and by the sweeper) using `Runner.clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo, RevisionStep
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.approvals.rules import approval_state, deadline, needs_approval
from dashboard.background import cancel_and_wait
from dashboard.db import create_migration_engine
from dashboard.migrations import locking
from dashboard.migrations.plan import Plan, PlanError, build_steps, make_plan, same_steps
from dashboard.migrations.preview import Preview, preserved_alembic_proxies, render_preview
from dashboard.migrations.scripts import ScriptCache
from dashboard.migrations.status import StatusService, VersionTableRead, read_version_table
from dashboard.settings import Settings
from dashboard.state import model as sm
from dashboard.state.store import ActiveRunExists, StateStore
from dashboard.targets import Target

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.3
STALE_QUEUED_S = 30.0
SWEEP_S = 10.0


# ---------------------------------------------------------------------------------------
# errors the HTTP layer maps to status codes
class RunError(Exception):
    status_code = 400

    def __init__(self, message: str, *, code: str = "invalid", extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra or {}


class RunInvalid(RunError):
    status_code = 422


class RunConflict(RunError):
    status_code = 409


class RunNotFound(RunError):
    status_code = 404


class RunForbidden(RunError):
    status_code = 403


class RunUnavailable(RunError):
    status_code = 503


class RunCancelled(Exception):
    """Raised inside the migration to stop between statements after a cancel request."""


class DatabaseMoved(Exception):
    pass


class EnvPyIgnoresConnection(Exception):
    pass


# ---------------------------------------------------------------------------------------
def initial_status(settings: Settings, plan: Plan) -> str:
    """THE approval decision for a new run: `awaiting_approval` or `queued`.

    Four-eyes rule: upgrades need approval when DASHBOARD_REQUIRE_APPROVAL is on (the
    default); downgrades always do. An approved run is started with `Runner.enqueue()`.
    """
    if needs_approval(settings.require_approval, plan.direction):
        return sm.AWAITING_APPROVAL
    return sm.QUEUED


def _now() -> datetime:
    return datetime.now(UTC)


def _valid_id(run_id: int) -> bool:
    """Run ids are positive BIGINTs: anything else is simply not found (never a 500)."""
    return 0 < run_id < 2**63


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(str(text).split())[:limit]


# ---------------------------------------------------------------------------------------
@dataclass
class LiveRun:
    """In-memory progress of the run executing in this process (fed from sync hooks)."""

    run_id: int
    plan: Plan
    requested_by: str
    started_mono: float = field(default_factory=time.monotonic)
    done: int = 0
    current_index: int | None = None
    current_revision: str | None = None
    step_started: float | None = None
    current_statement: str | None = None
    statement_started: float | None = None
    statements: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    pending_log: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested_by: str | None = None
    migrate_pid: int | None = None
    migrate_backend_start: datetime | None = None
    lock_wait: dict[str, Any] | None = None
    last_lock_wait: dict[str, Any] | None = None
    finished: bool = False

    def __post_init__(self) -> None:
        self.steps = [
            {"revision": s.revision, "message": s.message, "state": "pending", "duration_ms": None}
            for s in self.plan.steps
        ]

    def log(
        self,
        event_: str,
        message: str,
        *,
        revision: str | None = None,
        statement: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        self.pending_log.append(
            {
                "run_id": self.run_id,
                "at": _now(),
                "event": event_,
                "revision": revision,
                "message": message,
                "statement": statement,
                "duration_ms": duration_ms,
            }
        )

    # -- sync hooks (run inside run_sync, on the event loop thread) ----------------------
    def on_step_start(self, step: RevisionStep) -> None:
        if self.cancel_requested_by:
            raise RunCancelled(f"cancelled by {self.cancel_requested_by}")
        rev = step.revision.revision
        idx = next((i for i, s in enumerate(self.steps) if s["revision"] == rev), None)
        self.current_index, self.current_revision = idx, rev
        self.step_started = time.monotonic()
        if idx is not None:
            self.steps[idx]["state"] = "running"

    def on_version_apply(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        rev = self.current_revision or step.up_revision_id
        dur = (time.monotonic() - self.step_started) * 1000 if self.step_started else None
        if self.current_index is not None:
            self.steps[self.current_index].update(state="applied", duration_ms=dur)
        self.done += 1
        verb = "upgraded to" if step.is_upgrade else "downgraded"
        self.log(
            "revision_applied",
            f"{verb} {rev}; version table now {', '.join(sorted(heads)) or 'empty'}",
            revision=rev,
            duration_ms=dur,
        )

    def on_statement(self, statement: str) -> None:
        if self.cancel_requested_by:
            raise RunCancelled(f"cancelled by {self.cancel_requested_by}")
        self.current_statement = statement
        self.statement_started = time.monotonic()
        self.statements += 1

    # -- views -------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "total": len(self.plan.steps),
            "done": self.done,
            "current_index": self.current_index,
            "current_revision": self.current_revision,
            "current_statement": _one_line(self.current_statement or "", 2000) or None,
            "statement_elapsed_s": round(now - self.statement_started, 3)
            if self.statement_started
            else None,
            "elapsed_s": round(now - self.started_mono, 3),
            "statements": self.statements,
            "steps": self.steps,
            "lock_wait": self.lock_wait,
            "cancel_requested_by": self.cancel_requested_by,
            "live": not self.finished,
        }


def _instrument(step: RevisionStep, live: LiveRun) -> RevisionStep:
    fn = step.migration_fn

    @functools.wraps(fn)
    def run(**kw: Any) -> Any:
        live.on_step_start(step)
        return fn(**kw)

    step.migration_fn = run
    return step


def drive_alembic(
    conn: Connection,
    *,
    sd: ScriptDirectory,
    plan: Plan,
    target: Target,
    live: LiveRun,
    run_env_py: bool,
) -> None:
    """Sync, inside `AsyncConnection.run_sync`: run exactly the plan's steps on `conn`."""
    config = Config()
    config.set_main_option("script_location", str(target.script_location))
    config.attributes["connection"] = conn
    steps = build_steps(sd, plan)

    def fn(heads: Any, context: MigrationContext) -> list[RevisionStep]:
        if sorted(heads) != list(plan.from_heads):
            raise DatabaseMoved(
                f"the version table reads {', '.join(sorted(heads)) or 'nothing'}, "
                f"not {plan.from_label}"
            )
        return [_instrument(s, live) for s in steps]

    env = EnvironmentContext(config, sd, fn=fn, destination_rev=plan.confirm_value)
    configured: list[bool] = []
    if run_env_py:
        original = env.configure

        def configure(**kw: Any) -> None:
            configured.append(True)
            if kw.get("connection") is not conn:
                raise EnvPyIgnoresConnection(
                    "the project's env.py did not use config.attributes['connection']; "
                    "it opens its own connection, which the dashboard cannot guard. "
                    "Turn DASHBOARD_RUN_ENV_PY off (the default) to let the dashboard drive "
                    "the scripts itself."
                )
            theirs = kw.get("on_version_apply") or []
            theirs = list(theirs) if isinstance(theirs, list | tuple) else [theirs]
            kw["on_version_apply"] = [*theirs, live.on_version_apply]
            original(**kw)

        env.configure = configure  # type: ignore[method-assign,assignment]
    with preserved_alembic_proxies(), env:
        if run_env_py:
            try:
                sd.run_env()
            except EnvPyIgnoresConnection:
                raise
            except Exception as exc:
                if configured:
                    raise
                raise EnvPyIgnoresConnection(
                    "the project's env.py failed before it configured Alembic "
                    f"({type(exc).__name__}: {_one_line(str(exc), 200)}); in env.py mode it "
                    "must use config.attributes['connection']. Turn DASHBOARD_RUN_ENV_PY off "
                    "(the default) to let the dashboard drive the scripts itself."
                ) from exc
        else:
            env.configure(
                connection=conn,
                target_metadata=None,
                transaction_per_migration=True,
                version_table=target.version_table,
                version_table_schema=target.version_table_schema,
                on_version_apply=live.on_version_apply,
            )
            with env.begin_transaction():
                env.run_migrations()


# ---------------------------------------------------------------------------------------
def describe_failure(exc: BaseException) -> dict[str, Any]:
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None) if orig is not None else None
    sqlstate = None
    for candidate in (cause, orig, exc):
        sqlstate = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if sqlstate:
            break
    source = cause or orig or exc
    text = str(source).strip()
    # SQLAlchemy prefixes "(dialect.ExcClass) <class 'asyncpg...'>: message"
    text = re.sub(r"^\([^)]*\)\s*", "", text)
    text = re.sub(r"^<class '[^']*'>:\s*", "", text)
    return {
        "type": type(source).__name__,
        "sqlstate": sqlstate,
        "server_error": _one_line(text.splitlines()[0] if text else type(source).__name__),
        "statement": _one_line(getattr(exc, "statement", None) or "", 2000) or None,
    }


_REL_PATTERNS = (
    re.compile(r"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?([\w.\"]+)", re.I),
    re.compile(r"\bLOCK\s+TABLE\s+(?:ONLY\s+)?([\w.\"]+)", re.I),
    re.compile(r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?([\w.\"]+)", re.I),
    re.compile(r"\bON\s+(?:ONLY\s+)?([\w.\"]+)\s*(?:USING\s+\w+\s*)?\(", re.I),
    re.compile(r"\b(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM|TRUNCATE)\s+([\w.\"]+)", re.I),
)


def relation_of(statement: str | None) -> str | None:
    if not statement:
        return None
    for pat in _REL_PATTERNS:
        m = pat.search(statement)
        if m:
            return m.group(1)
    return None


# ---------------------------------------------------------------------------------------
class Runner:
    """Requests, runs, cancels and recovers migration runs for one target."""

    def __init__(
        self,
        settings: Settings,
        target: Target,
        url: str,
        state: StateStore,
        status: StatusService | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.url = url
        self.state = state
        self.status = status
        self.scripts = ScriptCache()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._live: dict[int, LiveRun] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._request_lock = asyncio.Lock()
        # The approval clock (expiry). Tests replace it to step past a TTL without sleeping.
        self.clock: Callable[[], datetime] = _now

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.recover()
        except Exception as exc:
            log.warning("run recovery at start-up failed (will retry): %s", exc)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="dashboard-run-sweeper")

    async def stop(self) -> None:
        await cancel_and_wait(self._sweeper)
        self._sweeper = None
        for run_id, live in list(self._live.items()):
            if not live.finished:
                with contextlib.suppress(Exception):
                    await self.cancel(run_id, actor="dashboard shutdown", address=None)
        if self._tasks:
            done, pending = await asyncio.wait(list(self._tasks.values()), timeout=15)
            for t in pending:
                t.cancel()

    async def wait(self, run_id: int, within_s: float = 60.0) -> None:
        """Wait for this process's task of `run_id` (tests, benchmark)."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), within_s)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.recover()
                await self.expire_due()
            except Exception as exc:
                log.debug("run sweep failed: %s", exc)

    # -- reading the target ------------------------------------------------------------
    async def read_current(self) -> VersionTableRead:
        async with self.state.raw_engine.connect() as conn:
            read = await conn.run_sync(read_version_table, self.target)
            await conn.rollback()
        return read

    async def load_scripts(self) -> ScriptDirectory:
        loaded = await asyncio.to_thread(self.scripts.load, self.target.script_location)
        if loaded.directory is None or loaded.errors:
            what = "; ".join(f"{e.file}: {e.error}" for e in loaded.errors) or "not loadable"
            raise RunInvalid(
                f"the migration scripts have errors, nothing can be planned: {what}",
                code="scripts",
            )
        return loaded.directory

    async def plan(
        self, direction: str, target: str, current: Sequence[str] | None = None
    ) -> tuple[ScriptDirectory, Plan]:
        sd = await self.load_scripts()
        if current is None:
            current = (await self.read_current()).current
        try:
            return sd, make_plan(sd, current, direction, target)
        except PlanError as exc:
            raise RunInvalid(exc.message, code=exc.code) from None

    async def preview(
        self, direction: str, target: str, current: Sequence[str] | None = None
    ) -> Preview:
        sd, plan = await self.plan(direction, target, current)
        # Synchronous on the loop thread on purpose (see preview.py on Alembic's proxies).
        return render_preview(sd, plan, self.target)

    # -- requests ----------------------------------------------------------------------
    async def request(
        self,
        *,
        actor: str,
        address: str | None,
        direction: str,
        target: str,
        expected_current: Sequence[str],
        sql_sha256: str | None = None,
    ) -> dict[str, Any]:
        """Validate, plan, preview and record a run; queue it unless approval is needed.

        `sql_sha256`, when given (the confirmation form), must equal the SQL about to be
        recorded: the operator confirmed exactly that SQL.
        """
        async with self._request_lock:
            try:
                return await self._request(
                    actor, address, direction, target, expected_current, sql_sha256
                )
            except RunError as exc:
                await self._audit(
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
                raise

    async def _request(
        self,
        actor: str,
        address: str | None,
        direction: str,
        target: str,
        expected_current: Sequence[str],
        sql_sha256: str | None,
    ) -> dict[str, Any]:
        await self._ensure_state()
        read = await self.read_current()
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
        preview = render_preview(sd, plan, self.target)
        if sql_sha256 is not None and sql_sha256 != preview.sql_sha256:
            raise RunConflict(
                "the SQL changed since it was shown (SHA-256 differs); review it again",
                code="sql_changed",
                extra={"sql_sha256": preview.sql_sha256},
            )
        await self._refuse_if_locked()
        status = initial_status(self.settings, plan)
        values: dict[str, Any] = {
            "target": self.target.name,
            "direction": plan.direction,
            "target_spec": plan.target,
            "to_rev": plan.confirm_value,
            "to_revs": list(plan.to_heads),
            "from_revs": list(plan.from_heads),
            "plan": {**plan.to_json(), "warnings": preview.warnings},
            "sql_sha256": preview.sql_sha256,
            "status": status,
            "requested_by": actor,
            "requested_from": address,
        }
        values["sql"] = preview.sql
        if status == sm.QUEUED:
            values.update(owner=self.owner, queued_at=_now(), heartbeat_at=_now())
        else:
            values["expires_at"] = deadline(self.clock(), self.settings.approval_ttl_minutes)
        try:
            row = await self.state.insert_run(values)
        except ActiveRunExists as exc:
            raise RunConflict(str(exc), code="busy", extra=self._busy_extra(exc.run)) from None
        await self.state.add_log(
            [
                {
                    "run_id": row["id"],
                    "at": _now(),
                    "event": "requested",
                    "revision": None,
                    "message": f"{actor} requested {plan.direction} {plan.from_label} -> "
                    f"{plan.confirm_value} ({len(plan.steps)} revision(s)); SQL sha256 "
                    f"{preview.sql_sha256[:16]}…; status {status}",
                    "statement": None,
                    "duration_ms": None,
                }
            ]
        )
        await self._audit(
            actor,
            address,
            "run.request",
            "created",
            {
                "run_id": row["id"],
                "direction": plan.direction,
                "target": plan.target,
                "to": list(plan.to_heads),
                "sql_sha256": preview.sql_sha256,
                "status": status,
            },
        )
        if status == sm.QUEUED:
            self._launch(row["id"])
        return row

    async def enqueue(
        self,
        run_id: int,
        *,
        actor: str,
        address: str | None = None,
        from_statuses: Sequence[str] = (sm.AWAITING_APPROVAL,),
        log_message: str | None = None,
        **values: Any,
    ) -> dict[str, Any]:
        """Start a run that was waiting (after approval). Atomic; 409 if moved.
        `log_message` goes into the run log before the job starts."""
        await self._ensure_state()
        await self._refuse_if_locked()
        try:
            row = await self.state.transition(
                run_id,
                from_statuses,
                status=sm.QUEUED,
                queued_at="now",
                heartbeat_at="now",
                owner=self.owner,
                **values,
            )
        except ActiveRunExists as exc:
            raise RunConflict(str(exc), code="busy", extra=self._busy_extra(exc.run)) from None
        if row is None:
            current = await self.state.get_run(run_id)
            if current is None:
                raise RunNotFound(f"run {run_id} does not exist", code="not_found")
            raise RunConflict(
                f"run {run_id} is {current['status']}; it cannot be started",
                code="state",
                extra={"status": current["status"]},
            )
        if log_message:
            await self.state.add_log([self._log_row(run_id, "executed", log_message)])
        await self._audit(actor, address, "run.execute", "queued", {"run_id": run_id})
        self._launch(run_id)
        return row

    async def cancel(self, run_id: int, *, actor: str, address: str | None) -> dict[str, Any]:
        await self._ensure_state()
        row = await self.state.get_run(run_id) if _valid_id(run_id) else None
        if row is None:
            raise RunNotFound(f"run {run_id} does not exist", code="not_found")
        if row["status"] in (sm.AWAITING_APPROVAL, sm.QUEUED):
            moved = await self.state.transition(
                run_id,
                (sm.AWAITING_APPROVAL, sm.QUEUED),
                status=sm.CANCELLED,
                finished_at="now",
                cancel_requested_by=actor,
                error=f"cancelled by {actor} before it started; nothing ran",
                verified_revs=row["from_revs"],
            )
            if moved is not None:
                await self.state.add_log(
                    [self._log_row(run_id, "cancelled", f"cancelled by {actor} before it started")]
                )
                await self._audit(actor, address, "run.cancel", "cancelled", {"run_id": run_id})
                return moved
            row = await self.state.get_run(run_id) or row
        if row["status"] != sm.RUNNING:
            raise RunConflict(
                f"run {run_id} is already {row['status']}; there is nothing to cancel",
                code="state",
                extra={"status": row["status"]},
            )
        marked = await self.state.request_cancel(run_id, actor) or row
        live = self._live.get(run_id)
        if live is not None:
            live.cancel_requested_by = actor
            live.log("cancel_requested", f"cancel requested by {actor}")
        signalled = await self._signal(marked)
        await self._audit(
            actor, address, "run.cancel", "requested", {"run_id": run_id, "signalled": signalled}
        )
        return marked

    async def _signal(self, row: dict[str, Any]) -> bool:
        live = self._live.get(row["id"])
        pid = live.migrate_pid if live else row.get("migrate_pid")
        started = live.migrate_backend_start if live else row.get("migrate_backend_start")
        if not pid or started is None:
            return False
        async with self.state.raw_engine.connect() as conn:
            ok = await locking.signal_backend(conn, pid, started)
            await conn.rollback()
        return ok

    # -- reading runs ------------------------------------------------------------------
    async def get(self, run_id: int, *, with_log: bool = True) -> dict[str, Any]:
        await self._ensure_state()
        row = await self.state.get_run(run_id) if _valid_id(run_id) else None
        if row is None:
            raise RunNotFound(f"run {run_id} does not exist", code="not_found")
        if self._due(row):
            await self.expire_due()
            row = await self.state.get_run(run_id) or row
        entries = await self.state.get_log(run_id) if with_log else []
        approval = await self.state.get_approval(run_id)
        data = self.to_json(row, entries, approval)
        data["sql"] = row.get("sql")
        return data

    async def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        await self._ensure_state()
        rows = await self.state.list_runs(limit=limit, target=self.target.name)
        if any(self._due(r) for r in rows):
            await self.expire_due()
            rows = await self.state.list_runs(limit=limit, target=self.target.name)
        approvals = await self.state.approvals_for([r["id"] for r in rows])
        return [self.to_json(r, None, approvals.get(r["id"])) for r in rows]

    # -- expiry ------------------------------------------------------------------------
    def _due(self, row: dict[str, Any]) -> bool:
        exp = row.get("expires_at")
        return row["status"] == sm.AWAITING_APPROVAL and exp is not None and self.clock() >= exp

    async def expire_due(self) -> list[int]:
        """Requests not approved in time, and approvals not executed in time, become
        `expired` (compare-and-set on status and expiry: safe across processes)."""
        now = self.clock()
        expired: list[int] = []
        for r in await self.state.due_for_expiry(self.target.name, now):
            ttl = self.settings.approval_ttl_minutes
            if r["approved_by"]:
                message = (
                    f"approval expired: approved by {r['approved_by']} but not executed within "
                    f"{ttl} min (by {r['expires_at']:%Y-%m-%d %H:%M:%S %Z}); nothing ran. "
                    "Request the run again."
                )
            else:
                message = (
                    f"request expired: not approved within {ttl} min (by "
                    f"{r['expires_at']:%Y-%m-%d %H:%M:%S %Z}); nothing ran. Request the run again."
                )
            moved = await self.state.transition(
                r["id"],
                (sm.AWAITING_APPROVAL,),
                status=sm.EXPIRED,
                finished_at="now",
                error=message,
                verified_revs=None,
            )
            if moved is None:
                continue
            expired.append(r["id"])
            await self.state.add_log([self._log_row(r["id"], "expired", message)])
            await self._audit(
                "dashboard",
                None,
                "run.expire",
                "expired",
                {
                    "run_id": r["id"],
                    "requested_by": r["requested_by"],
                    "approved_by": r["approved_by"],
                    "expires_at": _iso(r["expires_at"]),
                },
            )
        return expired

    def to_json(
        self,
        row: dict[str, Any],
        entries: list[dict[str, Any]] | None,
        approval: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        live = self._live.get(row["id"])
        progress = live.progress() if live is not None and not live.finished else row["progress"]
        progress = dict(progress or {})
        plan = row["plan"] or {}
        if "total" not in progress:
            progress["total"] = len(plan.get("steps", []))
            progress.setdefault("done", 0)
        if row["status"] == sm.RUNNING and live is None and row.get("started_at"):
            progress["elapsed_s"] = round((_now() - row["started_at"]).total_seconds(), 3)
        data: dict[str, Any] = {
            "id": row["id"],
            "status": row["status"],
            "direction": row["direction"],
            "target": row["target_spec"],
            "from": row["from_revs"],
            "to": row["to_revs"],
            "to_rev": row["to_rev"],
            "requested_by": row["requested_by"],
            "requested_from": row["requested_from"],
            "approved_by": row["approved_by"],
            "approved_at": _iso(row["approved_at"]),
            "sql_sha256": row["sql_sha256"],
            "created_at": _iso(row["created_at"]),
            "queued_at": _iso(row["queued_at"]),
            "started_at": _iso(row["started_at"]),
            "finished_at": _iso(row["finished_at"]),
            "heartbeat_at": _iso(row["heartbeat_at"]),
            "owner": row["owner"],
            "cancel_requested_by": row["cancel_requested_by"],
            "error": row["error"],
            "error_detail": row["error_detail"],
            "verified_revs": row["verified_revs"],
            "verified_at": _iso(row["verified_at"]),
            "progress": progress,
            "plan": plan,
            "duration_s": round((row["finished_at"] - row["started_at"]).total_seconds(), 3)
            if row["finished_at"] and row["started_at"]
            else None,
            "expires_at": _iso(row.get("expires_at")),
            "irreversible": list(plan.get("irreversible") or []),
            "approval_state": approval_state(row, approval),
            "approval": approval_json(approval),
        }
        if entries is not None:
            data["log"] = [
                {
                    "at": _iso(e["at"]),
                    "event": e["event"],
                    "revision": e["revision"],
                    "message": e["message"],
                    "statement": e["statement"],
                    "duration_ms": e["duration_ms"],
                }
                for e in entries
            ]
        return data

    # -- helpers -----------------------------------------------------------------------
    async def _ensure_state(self) -> None:
        try:
            await self.state.ensure()
        except Exception as exc:
            raise RunUnavailable(
                f"the dashboard's state store is unavailable: {exc}", code="state_unavailable"
            ) from None

    async def _refuse_if_locked(self) -> None:
        async with self.state.raw_engine.connect() as conn:
            holder = await locking.lock_holder(conn, self.target)
            await conn.rollback()
        if holder is not None:
            raise RunConflict(
                self._holder_message(holder),
                code="busy",
                extra={
                    "holder": {"pid": holder["pid"], "application_name": holder["application_name"]}
                },
            )

    def _holder_message(self, holder: dict[str, Any]) -> str:
        name = str(holder.get("application_name") or "")
        m = re.match(r"dashboard-lock run (\d+) by (.+)$", name)
        if m:
            return f"run {m.group(1)} by {m.group(2)} is in progress"
        return (
            f"another migration holds the lock for {self.target.qualified_version_table} "
            f"(backend pid {holder['pid']}, {name or 'unknown application'})"
        )

    def _busy_extra(self, run: dict[str, Any] | None) -> dict[str, Any]:
        if not run:
            return {}
        return {"run_id": run["id"], "requested_by": run["requested_by"], "status": run["status"]}

    def _log_row(self, run_id: int, ev: str, message: str, **kw: Any) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "at": _now(),
            "event": ev,
            "revision": kw.get("revision"),
            "message": message,
            "statement": kw.get("statement"),
            "duration_ms": kw.get("duration_ms"),
        }

    async def _audit(
        self, actor: str, address: str | None, action: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        run_id = detail.get("run_id")
        try:
            await self.state.record_audit(
                actor=actor,
                address=address,
                action=action,
                outcome=outcome,
                target=f"run {run_id}" if run_id is not None else self.target.name,
                detail={**detail, "database": self.target.name},
            )
        except Exception:
            log.exception("could not write audit row %s/%s", action, outcome)

    def _launch(self, run_id: int) -> None:
        task = asyncio.create_task(self._execute_guarded(run_id), name=f"migration-run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))

    # -- execution -----------------------------------------------------------------------
    async def _execute_guarded(self, run_id: int) -> None:
        try:
            await self._execute(run_id)
        except Exception as exc:
            log.exception("run %s: runner error", run_id)
            with contextlib.suppress(Exception):
                await self.state.transition(
                    run_id,
                    (sm.QUEUED, sm.RUNNING),
                    status=sm.FAILED,
                    finished_at="now",
                    error=f"runner error: {_one_line(str(exc), 300)}",
                )
        finally:
            self._live.pop(run_id, None)
            if self.status is not None:
                self.status.invalidate()

    async def _fail_before_start(self, run_id: int, message: str, **detail: Any) -> None:
        await self.state.transition(
            run_id,
            (sm.QUEUED,),
            status=sm.FAILED,
            finished_at="now",
            error=message,
            error_detail=detail or None,
        )
        await self.state.add_log([self._log_row(run_id, "refused", message)])
        await self._audit(
            "dashboard", None, "run.start", "refused", {"run_id": run_id, "reason": message}
        )

    async def _execute(self, run_id: int) -> None:
        row = await self.state.get_run(run_id)
        if row is None or row["status"] != sm.QUEUED:
            return
        plan = Plan.from_json(row["plan"])
        live = LiveRun(run_id=run_id, plan=plan, requested_by=row["requested_by"])
        live.cancel_requested_by = row["cancel_requested_by"]
        self._live[run_id] = live
        s = self.settings
        lock_engine = create_migration_engine(self.url)
        mig_engine = create_migration_engine(
            self.url, lock_timeout_ms=s.lock_timeout_ms, statement_timeout_ms=s.statement_timeout_ms
        )
        try:
            async with lock_engine.connect() as lock_conn:
                await lock_conn.execute(
                    locking.SET_APP_NAME,
                    {"name": f"dashboard-lock run {run_id} by {row['requested_by']}"[:63]},
                )
                got = await locking.try_lock(lock_conn, self.target)
                holder = None if got else await locking.lock_holder(lock_conn, self.target)
                lock_pid, lock_started = await locking.self_backend(lock_conn)
                read = await lock_conn.run_sync(read_version_table, self.target)
                await lock_conn.commit()
                if not got:
                    msg = self._holder_message(holder or {"pid": "?", "application_name": ""})
                    await self._fail_before_start(run_id, f"refused: {msg}")
                    return
                if read.current != list(plan.from_heads):
                    await self._fail_before_start(
                        run_id,
                        f"refused: the database moved to {', '.join(read.current) or 'base'} "
                        f"since the run was requested (expected {plan.from_label}); nothing ran",
                        actual_current=read.current,
                        expected_current=list(plan.from_heads),
                    )
                    return
                try:
                    sd = await self.load_scripts()
                    replanned = make_plan(sd, read.current, plan.direction, plan.target)
                except (RunError, PlanError) as exc:
                    await self._fail_before_start(run_id, f"refused: {exc}")
                    return
                if not same_steps(plan, replanned):
                    await self._fail_before_start(
                        run_id,
                        "refused: the migration scripts changed since the plan was made "
                        f"(now {', '.join(replanned.revisions)}); request the run again",
                    )
                    return
                started = await self.state.transition(
                    run_id,
                    (sm.QUEUED,),
                    status=sm.RUNNING,
                    started_at="now",
                    heartbeat_at="now",
                    owner=self.owner,
                    lock_pid=lock_pid,
                    lock_backend_start=lock_started,
                )
                if started is None:
                    return  # cancelled while queued
                live.started_mono = time.monotonic()
                live.log(
                    "started",
                    f"started by {self.owner}: {len(plan.steps)} revision(s), "
                    f"{plan.from_label} -> {plan.confirm_value}; lock_timeout "
                    f"{s.lock_timeout_ms} ms, statement_timeout {s.statement_timeout_ms or 'none'}"
                    f"{'; env.py mode' if s.run_env_py else ''}",
                )
                await self._audit(
                    row["requested_by"], None, "run.start", "running", {"run_id": run_id}
                )
                outcome = await self._run_migration(mig_engine, lock_conn, sd, plan, live)
                await self._finish(run_id, plan, live, outcome, mig_engine)
                with contextlib.suppress(Exception):
                    await lock_conn.execute(
                        locking.UNLOCK,
                        dict(zip(("a", "b"), locking.migration_lock_key(self.target), strict=True)),
                    )
                    await lock_conn.commit()
        finally:
            live.finished = True
            await lock_engine.dispose()
            await mig_engine.dispose()

    async def _run_migration(
        self,
        engine: AsyncEngine,
        lock_conn: Any,
        sd: ScriptDirectory,
        plan: Plan,
        live: LiveRun,
    ) -> dict[str, Any]:
        def before_cursor_execute(*args: Any) -> None:
            live.on_statement(args[2])

        event.listen(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
        error: BaseException | None = None
        left_in_transaction = False
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            live.migrate_pid = int(driver.get_server_pid())
            live.migrate_backend_start = await locking.backend_start(lock_conn, live.migrate_pid)
            await lock_conn.commit()
            await self.state.transition(
                live.run_id,
                (sm.RUNNING,),
                migrate_pid=live.migrate_pid,
                migrate_backend_start=live.migrate_backend_start,
            )
            beat = asyncio.create_task(self._heartbeat(live), name=f"run-{live.run_id}-heartbeat")
            try:
                if live.cancel_requested_by:
                    raise RunCancelled(f"cancelled by {live.cancel_requested_by}")
                await conn.run_sync(
                    drive_alembic,
                    sd=sd,
                    plan=plan,
                    target=self.target,
                    live=live,
                    run_env_py=self.settings.run_env_py,
                )
            except Exception as exc:
                error = exc
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await beat
            # Alembic commits its own per-revision transactions. A transaction still
            # open here means Alembic treated the connection as an outer transaction
            # it must not commit (the "success but nothing changed" trap): discard it,
            # and let the proof of commit report it.
            left_in_transaction = conn.in_transaction()
            with contextlib.suppress(Exception):
                await conn.rollback()
        return {"error": error, "left_in_transaction": left_in_transaction}

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
        if live.migrate_pid:
            async with self.state.raw_engine.connect() as conn:
                wait = await locking.lock_wait(conn, live.migrate_pid)
                await conn.rollback()
            live.lock_wait = wait
            if wait is not None:
                live.last_lock_wait = {
                    **wait,
                    "statement": live.current_statement,
                    "revision": live.current_revision,
                }
        entries, live.pending_log = live.pending_log, []
        await self.state.add_log(entries)
        res = await self.state.heartbeat(live.run_id, _jsonable(live.progress()))
        if res and res["cancel_requested_by"] and not live.cancel_requested_by:
            live.cancel_requested_by = res["cancel_requested_by"]
            live.log("cancel_requested", f"cancel requested by {live.cancel_requested_by}")
            row = await self.state.get_run(live.run_id)
            if row:
                await self._signal(row)

    async def _finish(
        self,
        run_id: int,
        plan: Plan,
        live: LiveRun,
        outcome: dict[str, Any],
        engine: AsyncEngine,
    ) -> None:
        error: BaseException | None = outcome["error"]
        verified: list[str] | None = None
        verify_error = None
        try:
            # Proof of commit: a brand-new connection (NullPool) reads the version table.
            async with engine.connect() as fresh:
                read = await fresh.run_sync(read_version_table, self.target)
                await fresh.rollback()
            verified = read.current
        except Exception as exc:
            verify_error = _one_line(str(exc), 300)
        live.current_statement = None
        at = ", ".join(verified) if verified else "base (nothing applied)"
        detail: dict[str, Any] = {}
        if error is None and verified == list(plan.to_heads):
            status = sm.SUCCEEDED
            message = f"database now at {at}, confirmed on a fresh connection"
        elif error is None:
            status = sm.FAILED
            if verified is None:
                message = (
                    "proof of commit failed: the version table could not be re-read on a fresh "
                    f"connection ({verify_error})"
                )
            else:
                message = (
                    f"proof of commit failed: Alembic reported success, but on a fresh "
                    f"connection the version table reads {at}, not {plan.confirm_value}"
                )
            if outcome["left_in_transaction"]:
                message += (
                    ". The migration connection was still inside a transaction Alembic did "
                    "not own (something executed on it before context.configure()), so "
                    "Alembic never committed; that transaction was rolled back"
                )
            detail = {
                "expected": list(plan.to_heads),
                "verified": verified,
                "left_in_transaction": outcome["left_in_transaction"],
            }
        elif isinstance(error, RunCancelled) or live.cancel_requested_by:
            status = sm.CANCELLED
            where = f" during revision {live.current_revision}" if live.current_revision else ""
            message = (
                f"cancelled by {live.cancel_requested_by}{where}; database left at {at} "
                "(verified on a fresh connection)"
            )
            detail = {"revision": live.current_revision, **describe_failure(error)}
        else:
            status = sm.FAILED
            detail = describe_failure(error)
            detail["revision"] = live.current_revision
            detail["statement"] = (
                detail["statement"] or _one_line(live.current_statement or "", 2000) or None
            )
            if isinstance(error, DatabaseMoved | EnvPyIgnoresConnection):
                detail["statement"] = None
            rev = f"revision {live.current_revision}" if live.current_revision else "the run"
            message = f"{rev} failed: {detail['server_error']}"
            if detail["statement"]:
                message += f" — while running: {detail['statement'][:300]}"
            if detail.get("sqlstate") == "55P03":
                blocker = await self._blocker_report(live, detail["statement"])
                detail["lock"] = blocker
                if blocker.get("text"):
                    message += f". {blocker['text']}"
            message += f". Database left at {at} (verified on a fresh connection)"
        if status != sm.SUCCEEDED and live.current_index is not None:
            step = live.steps[live.current_index]
            if step["state"] == "running":
                step["state"] = "failed" if status == sm.FAILED else "cancelled"
        live.finished = True
        live.log(
            status, message, revision=live.current_revision if status != sm.SUCCEEDED else None
        )
        entries, live.pending_log = live.pending_log, []
        await self.state.add_log(entries)
        progress = _jsonable(live.progress())
        progress["live"] = False
        await self.state.transition(
            run_id,
            (sm.RUNNING,),
            status=status,
            finished_at="now",
            heartbeat_at="now",
            verified_at="now" if verified is not None else None,
            verified_revs=verified,
            error=None if status == sm.SUCCEEDED else message,
            error_detail=_jsonable(detail) if detail else None,
            progress=progress,
        )
        await self._audit(
            live.requested_by,
            None,
            "run.finish",
            status,
            {"run_id": run_id, "verified": verified, "message": message},
        )
        log.info("run %s %s: %s", run_id, status, message)

    async def _blocker_report(self, live: LiveRun, statement: str | None) -> dict[str, Any]:
        """Who held the lock the migration waited for: sampled during the wait, or, failing
        that, whoever still holds a lock on the statement's table."""
        sample = live.last_lock_wait
        relation = None
        blockers: list[dict[str, Any]] = []
        if sample:
            waits = [w for w in sample.get("waiting_for") or [] if w.get("relation")]
            relation = waits[0]["relation"] if waits else None
            blockers = sample.get("blockers") or []
        if not blockers:
            relation = relation or relation_of(statement)
            if relation and live.migrate_pid:
                with contextlib.suppress(Exception):
                    async with self.state.raw_engine.connect() as conn:
                        blockers = await locking.relation_holders(conn, relation, live.migrate_pid)
                        await conn.rollback()
        parts = []
        if relation:
            parts.append(f"Lock timeout on table {relation}")
        for b in blockers[:3]:
            q = _one_line(b.get("query") or "", 200)
            parts.append(
                f"blocked by backend pid {b.get('pid')} ({b.get('state') or 'unknown state'}"
                f"{', ' + str(b.get('application_name')) if b.get('application_name') else ''})"
                f"{': ' + q if q else ''}"
            )
        return {
            "relation": relation,
            "blockers": _jsonable(blockers),
            "text": "; ".join(parts) if parts else "",
        }

    # -- recovery ----------------------------------------------------------------------
    async def recover(self) -> list[int]:
        """Runs left queued/running by a dead process become `interrupted`, with the
        database's actual revision recorded (and an orphaned migration backend stopped)."""
        await self.state.ensure()
        recovered: list[int] = []
        for r in await self.state.stale_runs(self.target.name, 0):
            if r["id"] in self._tasks or r["id"] in self._live:
                continue
            if r["status"] == sm.RUNNING:
                if await self._owner_alive(r):
                    continue
            elif (r.get("stale_s") or 0) < STALE_QUEUED_S:
                continue
            terminated = False
            if r.get("migrate_pid") and r.get("migrate_backend_start"):
                async with self.state.raw_engine.connect() as conn:
                    terminated = await locking.signal_backend(
                        conn, r["migrate_pid"], r["migrate_backend_start"], terminate=True
                    )
                    await conn.rollback()
            read = await self.read_current()
            at = ", ".join(read.current) or "base (nothing applied)"
            message = (
                f"interrupted: the dashboard process running it ({r.get('owner') or 'unknown'}) "
                f"stopped; database verified at {at}"
                + ("; its orphaned migration backend was terminated" if terminated else "")
            )
            moved = await self.state.transition(
                r["id"],
                (sm.QUEUED, sm.RUNNING),
                status=sm.INTERRUPTED,
                finished_at="now",
                verified_revs=read.current,
                verified_at="now",
                error=message,
                error_detail={"owner": r.get("owner"), "terminated_backend": terminated},
            )
            if moved is not None:
                recovered.append(r["id"])
                await self.state.add_log([self._log_row(r["id"], "interrupted", message)])
                await self._audit(
                    "dashboard",
                    None,
                    "run.recover",
                    "interrupted",
                    {"run_id": r["id"], "verified": read.current},
                )
                if self.status is not None:
                    self.status.invalidate()
        return recovered

    async def _owner_alive(self, r: dict[str, Any]) -> bool:
        pid, started = r.get("lock_pid"), r.get("lock_backend_start")
        if not pid or started is None:
            return (r.get("stale_s") or 0) < STALE_QUEUED_S
        async with self.state.raw_engine.connect() as conn:
            current = await locking.backend_start(conn, pid)
            await conn.rollback()
        return current is not None and current == started

    # -- overview card -----------------------------------------------------------------
    async def overview(self) -> dict[str, Any]:
        try:
            runs = await self.list_runs(limit=5)
        except RunError as exc:
            return {"runs_card": {"error": exc.message, "runs": [], "active": None}}
        active = next((r for r in runs if r["status"] in sm.OPEN), None)
        return {"runs_card": {"error": None, "runs": runs, "active": active}}


def approval_json(approval: dict[str, Any] | None) -> dict[str, Any] | None:
    """The decision on a run as the API shows it (None while nobody has decided)."""
    if approval is None:
        return None
    return {
        "decision": approval["decision"],
        "by": approval["approver"],
        "role": approval["approver_role"],
        "from": approval["approver_address"],
        "at": _iso(approval["decided_at"]),
        "reason": approval["reason"],
        "sql_sha256": approval["sql_sha256"],
        "file_sha256": approval["file_sha256"],
        "current_heads": approval["current_heads"],
        "expires_at": _iso(approval["expires_at"]),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value
