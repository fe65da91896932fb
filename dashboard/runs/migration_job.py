"""The part of a run that executes on the migration worker's loop (`worker.py`): open a
brand-new migration connection, report its backend pid, drive Alembic inside
`AsyncConnection.run_sync`, and say what happened. Nothing here touches the state store:
the executor, on the serving loop, records everything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import event

from dashboard.background import cancel_and_wait
from dashboard.db import create_migration_engine
from dashboard.migrations.apply import drive_alembic
from dashboard.migrations.plan import Plan
from dashboard.review.gate import StatementGate, StatementRefused
from dashboard.runs.lock_retry import LockRetrier
from dashboard.runs.pileup import PileupLimits
from dashboard.runs.progress import LiveRun
from dashboard.runs.retries import RetryLedger
from dashboard.runs.watchdog import Watchdog
from dashboard.targets import Target


@dataclass(frozen=True)
class Applied:
    """What happened on the migration connection."""

    error: BaseException | None
    left_in_transaction: bool


@dataclass(frozen=True)
class MigrationJob:
    url: str
    lock_timeout_ms: int
    statement_timeout_ms: int
    sd: ScriptDirectory
    plan: Plan
    target: Target
    live: LiveRun
    run_env_py: bool
    # Called with the migration backend's pid once connected; the worker waits for it.
    connected: Callable[[int], Future[None]]
    # What the approval covers: every statement a revision sends is checked before it is
    # sent (None: a run requested before statement pins existed).
    gate: StatementGate | None = None
    # Lock retries (attempts per statement) and the pile-up watchdog's limits
    lock_retries: int = 1
    pileup: PileupLimits | None = None


async def apply_on_worker(job: MigrationJob) -> Applied:
    """On the migration worker's loop: connect, report the pid, run Alembic, clean up."""
    engine = create_migration_engine(
        job.url, lock_timeout_ms=job.lock_timeout_ms, statement_timeout_ms=job.statement_timeout_ms
    )
    live = job.live

    gate = job.gate

    def before_cursor_execute(*args: Any) -> None:
        statement: str = args[2]
        if live.internal:
            return  # the lock retrier's own savepoints
        if live.refused is not None:
            # A revision that caught the refusal gets nothing more sent: not its next
            # statement, not Alembic's version-table update, not a COMMIT of its work.
            raise StatementRefused(live.refused)
        live.on_statement(statement)
        if gate is not None and live.in_revision is not None:
            refused = gate.check(live.in_revision, statement)
            if refused is not None:
                live.refused = refused
                raise StatementRefused(refused)

    event.listen(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
    live.retries = RetryLedger(limit=job.lock_retries)
    retrier = LockRetrier(live, live.retries, lock_timeout_ms=job.lock_timeout_ms)
    retrier.install(engine.sync_engine)
    watchdog = Watchdog(job.url, live, job.pileup) if job.pileup is not None else None
    watching: asyncio.Task[None] | None = None
    error: BaseException | None = None
    left_in_transaction = False
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            pid = int(driver.get_server_pid())
            await asyncio.wrap_future(job.connected(pid))
            if watchdog is not None:
                watching = asyncio.create_task(
                    watchdog.run(pid, live.migrate_backend_start), name="pileup-watchdog"
                )
            try:
                live.check_cancel()
                await conn.run_sync(
                    drive_alembic,
                    sd=job.sd,
                    plan=job.plan,
                    target=job.target,
                    hooks=live,
                    run_env_py=job.run_env_py,
                    guard=retrier,
                )
            except Exception as exc:
                error = exc
            # Alembic commits its own per-revision transactions. A transaction still open
            # here means Alembic treated the connection as an outer transaction it must
            # not commit (the "success but nothing changed" trap): discard it, and let
            # the proof of commit report it.
            left_in_transaction = conn.in_transaction()
            with contextlib.suppress(Exception):
                await conn.rollback()
    except Exception as exc:
        error = error or exc
    finally:
        if watching is not None:
            await cancel_and_wait(watching)
        retrier.remove(engine.sync_engine)
        event.remove(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
        await engine.dispose()
    return Applied(error, left_in_transaction)
