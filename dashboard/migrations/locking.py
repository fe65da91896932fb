"""Target-side SQL of the runner: the advisory lock, backend liveness, cancel/terminate,
and what a waiting migration statement is blocked by. Parameters are always bound.

The advisory lock is keyed on the database (advisory locks are per database) plus the
qualified version table, so two dashboards managing the same target serialize even when
their own state lives in different schemas.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.targets import Target

MIGRATION_LOCK_NS = 0x44524D  # "DRM": the dashboard's migration-run namespace


def migration_lock_key(target: Target) -> tuple[int, int]:
    ident = f"{target.version_table_schema or ''}.{target.version_table}"
    return MIGRATION_LOCK_NS, zlib.crc32(ident.encode()) & 0x7FFFFFFF


TRY_LOCK = text("SELECT pg_try_advisory_lock(:a, :b)")
UNLOCK = text("SELECT pg_advisory_unlock(:a, :b)")
LOCK_HOLDER = text(
    """
    SELECT l.pid, a.application_name, a.backend_start
    FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = :a AND l.objid = :b AND l.objsubid = 2 AND l.granted
    LIMIT 1
    """
)
SELF = text("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
SET_APP_NAME = text("SELECT set_config('application_name', :name, false)")
BACKEND_START = text("SELECT backend_start FROM pg_stat_activity WHERE pid = :pid")
CANCEL = text(
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_start = :backend_start"
)
TERMINATE = text(
    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_start = :backend_start"
)
LOCK_WAIT = text(
    """
    SELECT a.wait_event_type, a.wait_event,
      (SELECT json_agg(json_build_object(
                'locktype', l.locktype, 'mode', l.mode,
                'relation', CASE WHEN l.relation IS NULL THEN NULL
                                 ELSE l.relation::regclass::text END))
         FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) AS waiting_for,
      CASE WHEN a.wait_event_type = 'Lock' THEN
        (SELECT json_agg(json_build_object(
                  'pid', b.pid, 'query', b.query, 'state', b.state,
                  'application_name', b.application_name,
                  'xact_start', b.xact_start, 'backend_start', b.backend_start))
           FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid)))
      END AS blockers
    FROM pg_stat_activity a
    WHERE a.pid = :pid
    """
)
# After a lock timeout the wait is over; who still holds a lock on the relation?
RELATION_HOLDERS = text(
    """
    SELECT l.pid, l.mode, a.query, a.state, a.application_name, a.xact_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.relation = to_regclass(:relation) AND l.pid <> :pid
    ORDER BY a.xact_start NULLS LAST
    LIMIT 5
    """
)


async def try_lock(conn: AsyncConnection, target: Target) -> bool:
    a, b = migration_lock_key(target)
    return bool((await conn.execute(TRY_LOCK, {"a": a, "b": b})).scalar())


async def lock_holder(conn: AsyncConnection, target: Target) -> dict[str, Any] | None:
    a, b = migration_lock_key(target)
    row = (await conn.execute(LOCK_HOLDER, {"a": a, "b": b})).first()
    return dict(row._mapping) if row else None


async def self_backend(conn: AsyncConnection) -> tuple[int, datetime]:
    row = (await conn.execute(SELF)).one()
    return int(row.pid), row.backend_start


async def backend_start(conn: AsyncConnection, pid: int) -> datetime | None:
    row = (await conn.execute(BACKEND_START, {"pid": pid})).first()
    return row.backend_start if row else None


async def signal_backend(
    conn: AsyncConnection, pid: int, started: datetime, *, terminate: bool = False
) -> bool:
    """Cancel (or terminate) `pid` only if it is still the same backend."""
    stmt = TERMINATE if terminate else CANCEL
    return bool((await conn.execute(stmt, {"pid": pid, "backend_start": started})).scalar())


async def lock_wait(conn: AsyncConnection, pid: int) -> dict[str, Any] | None:
    row = (await conn.execute(LOCK_WAIT, {"pid": pid})).first()
    if row is None or row.wait_event_type != "Lock":
        return None
    return {
        "wait_event": row.wait_event,
        "waiting_for": row.waiting_for or [],
        "blockers": row.blockers or [],
    }


async def relation_holders(conn: AsyncConnection, relation: str, pid: int) -> list[dict[str, Any]]:
    rows = (await conn.execute(RELATION_HOLDERS, {"relation": relation, "pid": pid})).all()
    return [dict(r._mapping) for r in rows]
