"""Rehearsal: run a plan on a scratch database with the real runner and record exactly
what each revision sends, with the locks PostgreSQL granted for each statement.

Runs on the migration worker's loop (`await worker.run(rehearse, ...)`): revisions' Python
runs inside `AsyncConnection.run_sync`, as in a real run. Steps:

1. create `dashboard_rehearsal_<unix seconds>_<hex>` on the rehearsal server (an
   AUTOCOMMIT connection to the server URL's own database), from template0;
2. replay the schema from base up to the plan's `from` heads with `drive_alembic` (one
   upgrade plan per head, so several heads work);
3. run the plan itself with `drive_alembic` on a fresh migration connection, recording
   every statement sent while a revision's migration function runs (Alembic's
   version-table bookkeeping is not recorded), and around each statement inside a
   transaction the own backend's relation locks;
4. drop the scratch database (WITH (FORCE)), also on errors and cancellation.

Expected failures never raise: the role may not create databases, the server is
unreachable, the history does not replay from base, the plan fails. Each falls back to
`statements.offline_capture()` with `exact=False`, a note and `rehearsal_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from dashboard.db import create_migration_engine, describe_error, is_unavailable
from dashboard.migrations.apply import ApplyHooks, drive_alembic
from dashboard.migrations.plan import UPGRADE, Plan, make_plan
from dashboard.review import queries
from dashboard.review.fingerprints import fingerprint, is_catalog, reads_application_data
from dashboard.review.locks import analyze
from dashboard.review.model import Capture, CapturedStatement, RelationLock, RevisionCapture
from dashboard.review.statements import offline_capture, one_line, source_file
from dashboard.targets import Target

__all__ = ["LEFTOVER_AGE_S", "drop_leftovers", "rehearse"]

log = logging.getLogger(__name__)

REHEARSAL_APP_NAME = "dashboard-rehearsal"
LEFTOVER_AGE_S = 3600.0
_ERROR_LIMIT = 300


class _ReplayFailed(Exception):
    """The history does not replay from base up to the plan's `from` heads."""


class _PlanFailed(Exception):
    """The plan failed in the rehearsal (`revision`: the revision that was running)."""

    def __init__(self, revision: str | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.revision = revision
        self.error = error


# --- URLs and the scratch database -------------------------------------------------------


def scratch_url(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql+asyncpg")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def admin_engine(server_url: str) -> AsyncEngine:
    """AUTOCOMMIT, NullPool: CREATE / DROP DATABASE cannot run in a transaction block."""
    return create_async_engine(
        scratch_url(server_url),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"server_settings": {"application_name": REHEARSAL_APP_NAME}, "timeout": 10},
    )


async def _admin(server_url: str, sql: str) -> None:
    """One CREATE / DROP DATABASE on the server, on a connection of its own."""
    engine = admin_engine(server_url)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


async def _create(server_url: str, name: str) -> None:
    await _admin(server_url, queries.create_database_sql(name))


async def _drop(server_url: str, name: str) -> None:
    await _admin(server_url, queries.drop_database_sql(name))


async def _drop_surely(server_url: str, name: str) -> None:
    """Drop the scratch database even when the caller is being cancelled: the drop runs
    as its own task, shielded; a failure is logged (`drop_leftovers` catches it later)."""
    task = asyncio.ensure_future(_drop(server_url, name))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log_drop_failure(name))
        raise
    except Exception as exc:
        log.warning("could not drop rehearsal database %s: %s", name, describe_error(exc))


def _log_drop_failure(name: str) -> Callable[[asyncio.Future[None]], None]:
    def done(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not drop rehearsal database %s: %s", name, task.exception())

    return done


async def drop_leftovers(server_url: str, *, older_than_s: float = LEFTOVER_AGE_S) -> list[str]:
    """Drop scratch databases (`dashboard_rehearsal_<unix seconds>_<hex>`) created more than
    `older_than_s` ago, judged by the time in their name (a rehearsal that crashed before
    its own drop). Returns the names dropped; never raises for an unreachable server."""
    dropped: list[str] = []
    cutoff = time.time() - older_than_s
    engine = admin_engine(server_url)
    try:
        async with engine.connect() as conn:
            names = [str(r[0]) for r in await conn.execute(queries.SCRATCH_DATABASES)]
            for name in names:
                created = queries.scratch_created_at(name)
                if created is None or created > cutoff:
                    continue
                try:
                    await conn.exec_driver_sql(queries.drop_database_sql(name))
                except Exception as exc:
                    log.warning("could not drop leftover %s: %s", name, describe_error(exc))
                    continue
                dropped.append(name)
    except Exception as exc:
        log.warning("could not look for leftover rehearsal databases: %s", describe_error(exc))
    finally:
        await engine.dispose()
    return dropped


# --- recording what revisions send ------------------------------------------------------


@dataclass
class _Pending:
    sql: str
    in_transaction: bool
    held: frozenset[tuple[int, str]] | None  # None: locks not observed


@dataclass(frozen=True)
class _Lock:
    oid: int
    mode: str
    schema: str | None
    name: str | None
    kind: str | None


def _driver_connection(conn: Connection) -> Any:
    """The DBAPI (asyncpg adapter) connection under a sync Connection."""
    return conn.connection.dbapi_connection


def _query(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    """Run `sql` on the same physical connection through a plain DBAPI cursor: no
    SQLAlchemy events fire, so the recorder never sees its own queries."""
    cursor = _driver_connection(conn).cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


class _Recorder:
    """ApplyHooks plus cursor listeners: the statements each revision's function sends."""

    def __init__(self, plan: Plan) -> None:
        self.revision: str | None = None
        self.last_revision: str | None = None
        self.sent: dict[str, list[CapturedStatement]] = {s.revision: [] for s in plan.steps}
        self._index = 0
        self._pending: _Pending | None = None
        self._busy = False
        self._names: dict[int, tuple[str, str, str]] = {}

    # ApplyHooks
    def on_step_start(self, revision: str) -> None:
        self.revision = self.last_revision = revision

    def on_step_end(self, revision: str) -> None:
        self.revision = None
        self._pending = None

    def on_version_apply(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        return None

    # cursor events
    def before(self, conn: Connection, cursor: Any, statement: str, *rest: Any) -> None:
        if self.revision is None or self._busy:
            return
        in_tx = not bool(getattr(_driver_connection(conn), "autocommit", False))
        held: frozenset[tuple[int, str]] | None = None
        catalog_only, ddl = _shape(statement)
        # SQLAlchemy's catalog reads (reflection, "does this enum exist") lock only catalog
        # tables: their locks are not observed, which halves the recorder's own queries.
        if in_tx and not catalog_only:
            self._busy = True
            try:
                if ddl or not self._names:  # only DDL can drop or rename a relation
                    for oid, schema, name, kind in _query(conn, queries.RELATIONS):
                        self._names[int(oid)] = (str(schema), str(name), str(kind))
                held = frozenset((lock.oid, lock.mode) for lock in self._locks(conn))
            finally:
                self._busy = False
        self._pending = _Pending(statement, in_tx, held)

    def after(self, conn: Connection, cursor: Any, statement: str, *rest: Any) -> None:
        pending, self._pending = self._pending, None
        if self.revision is None or self._busy or pending is None:
            return
        observed: tuple[RelationLock, ...] | None = None
        if pending.in_transaction and pending.held is not None:
            self._busy = True
            try:
                observed = self._new_locks(conn, pending.held)
            finally:
                self._busy = False
        self.sent[self.revision].append(
            CapturedStatement(
                revision=self.revision,
                index=self._index,
                sql=pending.sql,
                fingerprint=fingerprint(pending.sql),
                in_transaction=pending.in_transaction,
                reads_rows=getattr(cursor, "description", None) is not None,
                observed_locks=observed,
            )
        )
        self._index += 1

    def _locks(self, conn: Connection) -> list[_Lock]:
        out = []
        for oid, mode, schema, name, kind in _query(conn, queries.OWN_RELATION_LOCKS):
            known = self._names.get(int(oid))
            if name is None and known is not None:
                schema, name, kind = known
            out.append(_Lock(int(oid), str(mode), schema, name, kind))
        return out

    def _new_locks(
        self, conn: Connection, held: frozenset[tuple[int, str]]
    ) -> tuple[RelationLock, ...]:
        new: list[RelationLock] = []
        for lock in self._locks(conn):
            if (lock.oid, lock.mode) in held or lock.name is None:
                continue
            if lock.kind not in queries.TABLE_KINDS or _system(lock.schema):
                continue
            found = RelationLock(f"{lock.schema}.{lock.name}", lock.mode)
            if found not in new:
                new.append(found)
        return tuple(new)


def _system(schema: str | None) -> bool:
    return (
        schema is None
        or schema in queries.SYSTEM_SCHEMAS
        or schema.startswith("pg_toast")
        or schema.startswith("pg_temp")
    )


# --- data dependence ----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _shape(sql: str) -> tuple[bool, bool]:
    """(reads only system catalogs, changes the schema) of a statement, by its text."""
    found = analyze(sql)
    catalog_only = bool(found) and all(
        not f.schema_change and all(is_catalog(lock.relation) for lock in f.locks) and bool(f.locks)
        for f in found
    )
    return catalog_only, any(f.schema_change for f in found)


def _revision(rev: str, sent: list[CapturedStatement], sd: ScriptDirectory) -> RevisionCapture:
    reader = next((s for s in sent if s.reads_rows and reads_application_data(s.sql)), None)
    reason = None
    if reader is not None:
        reason = (
            f"reads rows from the database ({one_line(reader.sql, 80)}) and decides what to "
            "send from them; on the scratch database (the schema, none of the real data) it "
            f"sent {len(sent)} statement{'s' if len(sent) != 1 else ''}"
        )
    return RevisionCapture(
        revision=rev,
        statements=tuple(sent),
        data_dependent=reader is not None,
        data_reason=reason,
        source_file=source_file(sd, rev),
    )


# --- driving the runner -------------------------------------------------------------------


class _Silent:
    """ApplyHooks that listen to nothing (the replay)."""

    def on_step_start(self, revision: str) -> None:
        return None

    def on_step_end(self, revision: str) -> None:
        return None

    def on_version_apply(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        return None


def _replay_plans(sd: ScriptDirectory, heads: tuple[str, ...]) -> list[Plan]:
    """Upgrade plans from base to `heads`, one head at a time."""
    plans: list[Plan] = []
    current: tuple[str, ...] = ()
    for head in heads:
        if head in current:
            continue
        plan = make_plan(sd, current, UPGRADE, head)
        plans.append(plan)
        current = plan.to_heads
    return plans


async def _drive(
    engine: AsyncEngine,
    *,
    sd: ScriptDirectory,
    plan: Plan,
    target: Target,
    hooks: ApplyHooks,
    run_env_py: bool,
) -> None:
    """One `drive_alembic` on a brand-new connection (as runs/migration_job.py does)."""
    async with engine.connect() as conn:
        try:
            await conn.run_sync(
                drive_alembic, sd=sd, plan=plan, target=target, hooks=hooks, run_env_py=run_env_py
            )
        finally:
            with contextlib.suppress(Exception):
                await conn.rollback()


async def _replay(
    engine: AsyncEngine, sd: ScriptDirectory, plan: Plan, target: Target, run_env_py: bool
) -> None:
    try:
        for step in _replay_plans(sd, plan.from_heads):
            await _drive(
                engine, sd=sd, plan=step, target=target, hooks=_Silent(), run_env_py=run_env_py
            )
    except Exception as exc:  # PlanError included
        raise _ReplayFailed(_error_text(exc)) from exc


async def _record(
    engine: AsyncEngine, sd: ScriptDirectory, plan: Plan, target: Target, run_env_py: bool
) -> _Recorder:
    recorder = _Recorder(plan)
    sync_engine = engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", recorder.before)
    event.listen(sync_engine, "after_cursor_execute", recorder.after)
    try:
        await _drive(engine, sd=sd, plan=plan, target=target, hooks=recorder, run_env_py=run_env_py)
    except Exception as exc:
        raise _PlanFailed(recorder.revision or recorder.last_revision, exc) from exc
    finally:
        event.remove(sync_engine, "before_cursor_execute", recorder.before)
        event.remove(sync_engine, "after_cursor_execute", recorder.after)
    return recorder


def _error_text(exc: BaseException) -> str:
    return one_line(describe_error(exc) or type(exc).__name__, _ERROR_LIMIT)


def _insufficient_privilege(exc: BaseException) -> bool:
    seen: list[BaseException | None] = [exc]
    while seen:
        e = seen.pop()
        if e is None:
            continue
        if getattr(e, "sqlstate", None) == "42501" or getattr(e, "pgcode", None) == "42501":
            return True
        seen.extend([getattr(e, "orig", None), e.__cause__])
    return False


def _fallback(
    sd: ScriptDirectory, plan: Plan, target: Target, why: str, error: str, started: float
) -> Capture:
    offline = offline_capture(sd, plan, target)
    note = f"{why}; the statements come from Alembic's offline render instead."
    return Capture(
        exact=False,
        source=offline.source,
        revisions=offline.revisions,
        note=note,
        rehearsal_error=one_line(error, _ERROR_LIMIT),
        elapsed_ms=(time.monotonic() - started) * 1000.0,
    )


async def rehearse(
    *,
    server_url: str,
    sd: ScriptDirectory,
    plan: Plan,
    target: Target,
    run_env_py: bool = False,
) -> Capture:
    """The exact statements `plan` sends, per revision, recorded on a scratch database of
    the server `server_url` points at (its database part is where CREATE DATABASE runs).
    Falls back to the offline render (exact=False, with the reason) when the rehearsal
    cannot run or fails; the scratch database is always dropped."""
    started = time.monotonic()
    name = queries.scratch_name()
    try:
        await _create(server_url, name)
    except asyncio.CancelledError:
        await _drop_surely(server_url, name)  # it may have been created before the cancel
        raise
    except Exception as exc:
        error = _error_text(exc)
        if _insufficient_privilege(exc):
            why = "the rehearsal could not run: the role may not create databases on the server"
        elif is_unavailable(exc):
            why = "the rehearsal could not run: the rehearsal server could not be reached"
        else:
            why = "the rehearsal could not run: creating the scratch database failed"
        return _fallback(sd, plan, target, f"{why} ({error})", error, started)
    engine = create_migration_engine(scratch_url(server_url, name))
    try:
        await _replay(engine, sd, plan, target, run_env_py)
        recorder = await _record(engine, sd, plan, target, run_env_py)
    except _ReplayFailed as exc:
        error = str(exc)
        return _fallback(
            sd, plan, target, f"the history does not replay from base: {error}", error, started
        )
    except _PlanFailed as exc:
        error = _error_text(exc.error)
        where = exc.revision or "(before its first revision)"
        text = one_line(f"the rehearsal failed at revision {where}: {error}", _ERROR_LIMIT)
        return _fallback(sd, plan, target, text, text, started)
    finally:
        with contextlib.suppress(Exception):
            await engine.dispose()
        await _drop_surely(server_url, name)
    return Capture(
        exact=True,
        source="rehearsal",
        revisions=tuple(_revision(s.revision, recorder.sent[s.revision], sd) for s in plan.steps),
        note=None,
        elapsed_ms=(time.monotonic() - started) * 1000.0,
    )
