"""Target-side SQL of the runner: the advisory lock, backend liveness, cancel/terminate,
and what a waiting migration statement is blocked by. Parameters are always bound.

The advisory lock is keyed on the database (advisory locks are per database) plus the
qualified version table, so two dashboards managing the same target serialize even when
their own state lives in different schemas.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.runs.pileup import PileupReading
from dashboard.runs.progress import LockWait
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
SERVER_STARTED = text("SELECT pg_postmaster_start_time()")
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
# What the migration backend waits for, and who is behind it. `pg_blocking_pids()` also
# lists waiters queued ahead with conflicting requests (soft blocks): the chain is followed
# through waiting sessions (only those: it takes the lock manager's locks) to the sessions
# that hold what everyone waits for, the roots (`root`: true). Waiters on the way are kept
# (`root`: false) so "3 queued ahead" can be said, but they are never named as the blocker.
LOCK_WAIT = text(
    """
    WITH RECURSIVE me AS (
      SELECT a.pid, a.wait_event_type, a.wait_event FROM pg_stat_activity a WHERE a.pid = :pid
    ), chain(pid, path) AS (
      SELECT b, ARRAY[me.pid]
      FROM me, unnest(pg_blocking_pids(me.pid)) AS b
      WHERE me.wait_event_type = 'Lock'
      UNION
      SELECT b, c.path || c.pid
      FROM chain c
      JOIN pg_stat_activity w ON w.pid = c.pid AND w.wait_event_type = 'Lock'
      CROSS JOIN LATERAL unnest(pg_blocking_pids(c.pid)) AS b
      WHERE NOT b = ANY (c.path || c.pid) AND cardinality(c.path) < 16
    ), found AS (SELECT DISTINCT pid FROM chain)
    SELECT me.wait_event_type, me.wait_event,
      (SELECT json_agg(json_build_object(
                'locktype', l.locktype, 'mode', l.mode,
                'relation', CASE WHEN l.relation IS NULL THEN NULL
                                 ELSE l.relation::regclass::text END))
         FROM pg_locks l WHERE l.pid = me.pid AND NOT l.granted) AS waiting_for,
      (SELECT json_agg(json_build_object(
                'pid', b.pid, 'query', b.query, 'state', b.state,
                'application_name', b.application_name, 'usename', b.usename,
                'xact_start', b.xact_start, 'backend_start', b.backend_start,
                'root', b.wait_event_type IS DISTINCT FROM 'Lock',
                'direct', b.pid = ANY (pg_blocking_pids(me.pid)))
                ORDER BY b.wait_event_type IS DISTINCT FROM 'Lock' DESC, b.xact_start)
         FROM found f JOIN pg_stat_activity b ON b.pid = f.pid) AS blockers
    FROM me
    """
)
# The watchdog's look, ten times a second while a migration statement is in flight: does
# the migration backend wait for a lock, and if so how many sessions queue behind it and
# for how long (pg_locks.waitstart, PostgreSQL 14+). pg_blocking_pids() is called only for
# sessions that wait for a lock, and only while the migration itself waits.
PILEUP = text(
    """
    SELECT r.wait_event_type = 'Lock' AS runner_waiting,
      CASE WHEN r.wait_event_type = 'Lock' THEN (
        SELECT ARRAY[count(*)::float8,
                     coalesce(max(extract(epoch FROM clock_timestamp()
                                  - coalesce(l.waitstart, w.query_start))) * 1000, 0)]
        FROM pg_stat_activity w
        LEFT JOIN pg_locks l ON l.pid = w.pid AND NOT l.granted
        WHERE w.wait_event_type = 'Lock' AND w.pid <> r.pid
          AND r.pid = ANY (pg_blocking_pids(w.pid))
      ) END AS queued
    FROM pg_stat_activity r
    WHERE r.pid = :pid
    """
)
# Cancel the migration's statement only while it still waits for a lock (and is the same
# backend): a statement that got its lock meanwhile is left alone.
CANCEL_LOCK_WAIT = text(
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_start = :backend_start AND wait_event_type = 'Lock'"
)
# After a lock timeout the wait is over; who still holds a lock on the relation? (One row
# per session, its granted modes joined: a session holding two modes is listed once.)
RELATION_HOLDERS = text(
    """
    SELECT l.pid, string_agg(l.mode, ', ' ORDER BY l.mode) AS mode, a.query, a.state,
      a.application_name, a.xact_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.relation = to_regclass(:relation) AND l.pid <> :pid
    GROUP BY l.pid, a.query, a.state, a.application_name, a.xact_start
    ORDER BY a.xact_start NULLS LAST
    LIMIT 5
    """
)


async def try_lock(conn: AsyncConnection, target: Target) -> bool:
    a, b = migration_lock_key(target)
    return bool((await conn.execute(TRY_LOCK, {"a": a, "b": b})).scalar())


@dataclass(frozen=True)
class LockHolder:
    """The backend holding a target's migration lock."""

    pid: int
    application_name: str

    def describe(self, target: Target) -> str:
        """A running run's lock connection is named "dashboard-lock run N by USER"."""
        prefix = "dashboard-lock run "
        if self.application_name.startswith(prefix) and " by " in self.application_name:
            run, _, who = self.application_name[len(prefix) :].partition(" by ")
            if run.isdigit():
                return f"run {run} by {who} is in progress"
        return (
            f"another migration holds the lock for {target.qualified_version_table} "
            f"(backend pid {self.pid}, {self.application_name or 'unknown application'})"
        )


async def lock_holder(conn: AsyncConnection, target: Target) -> LockHolder | None:
    a, b = migration_lock_key(target)
    row = (await conn.execute(LOCK_HOLDER, {"a": a, "b": b})).first()
    return LockHolder(int(row.pid), str(row.application_name or "")) if row else None


async def self_backend(conn: AsyncConnection) -> tuple[int, datetime]:
    row = (await conn.execute(SELF)).one()
    return int(row.pid), row.backend_start


async def server_started(conn: AsyncConnection) -> datetime:
    """When the PostgreSQL server last started (a restart cuts every connection)."""
    started: datetime = (await conn.execute(SERVER_STARTED)).scalar_one()
    return started


async def backend_start(conn: AsyncConnection, pid: int) -> datetime | None:
    row = (await conn.execute(BACKEND_START, {"pid": pid})).first()
    return row.backend_start if row else None


async def signal_backend(
    conn: AsyncConnection, pid: int, started: datetime, *, terminate: bool = False
) -> bool:
    """Cancel (or terminate) `pid` only if it is still the same backend."""
    stmt = TERMINATE if terminate else CANCEL
    return bool((await conn.execute(stmt, {"pid": pid, "backend_start": started})).scalar())


async def lock_wait(conn: AsyncConnection, pid: int) -> LockWait | None:
    row = (await conn.execute(LOCK_WAIT, {"pid": pid})).first()
    if row is None or row.wait_event_type != "Lock":
        return None
    return LockWait(row.wait_event, list(row.waiting_for or []), list(row.blockers or []))


async def pileup(conn: AsyncConnection, pid: int) -> PileupReading:
    row = (await conn.execute(PILEUP, {"pid": pid})).first()
    if row is None or not row.runner_waiting:
        return PileupReading(False)
    waiters, oldest = row.queued or (0.0, 0.0)
    return PileupReading(True, int(waiters), float(oldest))


async def cancel_lock_wait(conn: AsyncConnection, pid: int, started: datetime) -> bool:
    row = (await conn.execute(CANCEL_LOCK_WAIT, {"pid": pid, "backend_start": started})).first()
    return bool(row and row[0])


async def relation_holders(conn: AsyncConnection, relation: str, pid: int) -> list[dict[str, Any]]:
    """Who holds a granted lock on `relation` (JSON-ready: they go into the run's detail)."""
    rows = (await conn.execute(RELATION_HOLDERS, {"relation": relation, "pid": pid})).all()
    return [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r._mapping.items()}
        for r in rows
    ]
