"""Target-side SQL of live DDL progress: both progress views for one backend pid, in one
round trip. A backend reports at most one progress command at a time, so at most one of
the two halves returns a row.

Relation and index names are resolved with `::regclass` in the reading connection's
database, so only for rows of that same database. The reader leaves its transaction
open like any SQLAlchemy statement: the caller ends it (a `CREATE INDEX CONCURRENTLY`
waits for old snapshots, a diagnostics connection must not keep one).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.runs.ddl_progress import DdlSample

DDL_PROGRESS = text(
    """
    SELECT 'create_index' AS view, p.command, p.phase,
      CASE WHEN p.datname = current_database()
        THEN NULLIF(p.relid, 0)::regclass::text END AS relation,
      CASE WHEN p.datname = current_database()
        THEN NULLIF(p.index_relid, 0)::regclass::text END AS index,
      p.lockers_total, p.lockers_done, p.current_locker_pid,
      p.blocks_total, p.blocks_done, p.tuples_total, p.tuples_done,
      p.partitions_total, p.partitions_done,
      NULL::bigint AS heap_tuples_scanned, NULL::bigint AS heap_tuples_written,
      NULL::bigint AS heap_blks_total, NULL::bigint AS heap_blks_scanned,
      NULL::bigint AS index_rebuild_count,
      NULL::float8 AS rel_tuples, NULL::bigint AS index_count
    FROM pg_stat_progress_create_index p
    WHERE p.pid = :pid
    UNION ALL
    SELECT 'cluster', p.command, p.phase,
      CASE WHEN p.datname = current_database()
        THEN NULLIF(p.relid, 0)::regclass::text END,
      CASE WHEN p.datname = current_database()
        THEN NULLIF(p.cluster_index_relid, 0)::regclass::text END,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      p.heap_tuples_scanned, p.heap_tuples_written,
      p.heap_blks_total, p.heap_blks_scanned, p.index_rebuild_count,
      CASE WHEN p.datname = current_database()
        THEN (SELECT c.reltuples::float8 FROM pg_class c WHERE c.oid = p.relid) END,
      CASE WHEN p.datname = current_database()
        THEN (SELECT count(*) FROM pg_index i WHERE i.indrelid = p.relid) END
    FROM pg_stat_progress_cluster p
    WHERE p.pid = :pid
    LIMIT 1
    """
)


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int) else None


async def read_ddl_sample(conn: AsyncConnection, pid: int) -> DdlSample | None:
    """The progress row of backend `pid`, or None when it runs no reporting DDL."""
    row = (await conn.execute(DDL_PROGRESS, {"pid": pid})).mappings().first()
    if row is None:
        return None
    rel_tuples = row["rel_tuples"]
    return DdlSample(
        view=str(row["view"]),
        command=row["command"],
        phase=row["phase"],
        relation=row["relation"],
        index=row["index"],
        lockers_total=_int(row["lockers_total"]),
        lockers_done=_int(row["lockers_done"]),
        current_locker_pid=_int(row["current_locker_pid"]),
        blocks_total=_int(row["blocks_total"]),
        blocks_done=_int(row["blocks_done"]),
        tuples_total=_int(row["tuples_total"]),
        tuples_done=_int(row["tuples_done"]),
        partitions_total=_int(row["partitions_total"]),
        partitions_done=_int(row["partitions_done"]),
        heap_tuples_scanned=_int(row["heap_tuples_scanned"]),
        heap_tuples_written=_int(row["heap_tuples_written"]),
        heap_blks_total=_int(row["heap_blks_total"]),
        heap_blks_scanned=_int(row["heap_blks_scanned"]),
        index_rebuild_count=_int(row["index_rebuild_count"]),
        rel_tuples=float(rel_tuples) if rel_tuples is not None else None,
        index_count=_int(row["index_count"]),
    )
