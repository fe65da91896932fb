"""What the runs area's parts share for one target: settings, the repository, the audit
writer, the migration worker, the approval clock, and the few reads of the target
database they all need (version table, scripts, the migration lock)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.audit.log import AuditEvent, AuditLog
from dashboard.migrations.scripts import ScriptCache
from dashboard.migrations.status import StatusService, VersionTableRead, read_version_table
from dashboard.runs import locking
from dashboard.runs.errors import RunConflict, RunInvalid, reachable
from dashboard.runs.progress import now
from dashboard.runs.repo import RunRepo
from dashboard.runs.worker import MigrationWorker
from dashboard.settings import Settings
from dashboard.targets import Target

TARGET = "the target database"


@dataclass
class RunsContext:
    settings: Settings
    target: Target
    url: str  # the target database (migration and lock connections are opened on it)
    repo: RunRepo
    audit: AuditLog
    target_engine: AsyncEngine  # the dashboard's own small pool on the target database
    worker: MigrationWorker = field(default_factory=MigrationWorker)
    status: StatusService | None = None
    scripts: ScriptCache = field(default_factory=ScriptCache)
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # The approval clock (expiry). Tests replace it to step past a TTL without sleeping.
    clock: Callable[[], datetime] = now

    def event(
        self,
        actor: str,
        address: str | None,
        action: str,
        outcome: str,
        detail: Mapping[str, object],
    ) -> AuditEvent:
        """An audit row about a run ("run N") or, without a run id, about the target."""
        run_id = detail.get("run_id")
        return AuditEvent(
            actor=actor or "anonymous",
            action=action,
            outcome=outcome,
            target=f"run {run_id}" if run_id is not None else self.target.name,
            address=address or None,
            detail={**detail, "database": self.target.name},
        )

    def schema_changed(self) -> None:
        if self.status is not None:
            self.status.invalidate()

    @reachable(TARGET)
    async def read_current(self) -> VersionTableRead:
        async with self.target_engine.connect() as conn:
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

    @reachable(TARGET)
    async def refuse_if_locked(self) -> None:
        """RunConflict when another migration holds the target's advisory lock."""
        async with self.target_engine.connect() as conn:
            holder = await locking.lock_holder(conn, self.target)
            await conn.rollback()
        if holder is not None:
            raise RunConflict(
                holder.describe(self.target),
                code="busy",
                extra={"holder": {"pid": holder.pid, "application_name": holder.application_name}},
            )

    @reachable(TARGET)
    async def signal(self, pid: int | None, started: datetime | None, *, terminate: bool) -> bool:
        """Cancel (or terminate) a migration backend, only if it is still the same one."""
        if not pid or started is None:
            return False
        async with self.target_engine.connect() as conn:
            ok = await locking.signal_backend(conn, pid, started, terminate=terminate)
            await conn.rollback()
        return ok
