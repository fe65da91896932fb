"""Every SQL statement of the server area. Parameters are bound, never formatted in.

The sampler runs, inside one short transaction on the diagnostics engine:

1. `TIGHT_TIMEOUTS` (SET LOCAL equivalents) so nothing it sends can join a lock queue
   for long or run away;
2. `SAMPLE` (or `SAMPLE_PRE14`): one row per backend from pg_stat_activity, with
   the lock each waiter wants (pg_locks, read once per statement through a materialized
   CTE, the relation name resolved in this database) and `pg_blocking_pids()` called
   only for waiters: sessions with an ungranted lock in pg_locks, or whose
   wait_event_type is `Lock`. pg_locks decides, not pg_stat_activity alone: a role
   without pg_read_all_stats sees other users' wait_event_type (and state, query,
   backend_start) as NULL, but their pg_locks rows and pg_blocking_pids() in full;
3. every `SETTINGS_TTL_S` seconds: `SETTINGS`, `PRIVILEGES`, `DB_ROLE_SETTINGS` and,
   for superusers, `FILE_SETTINGS`;
4. only while a review page watches relations (`Sampler.watch_relations`):
   `RELATION_LOCKS` (or `RELATION_LOCKS_PRE14`), once per cycle whatever the number of
   viewers.

The review area reads table sizes with `RELATION_SIZES` (one statement for a list of
names; `RELATION_SIZES_CATALOG` when a lock on a table makes the size functions wait).

The actions (cancel / terminate) re-check the backend identity in the very statement
that sends the signal: see `SIGNAL_*`.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

# Tight, transaction-local guards for the sampler's own statements.
SAMPLER_LOCK_TIMEOUT_MS = 200
SAMPLER_STATEMENT_TIMEOUT_MS = 2000

TIGHT_TIMEOUTS: TextClause = text(
    "SELECT pg_catalog.set_config('lock_timeout', :lock_ms, true), "
    "pg_catalog.set_config('statement_timeout', :stmt_ms, true)"
)

# The settings the area reads, refreshed every few cycles (they rarely change).
SETTING_NAMES: tuple[str, ...] = (
    "server_version_num",
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",  # PostgreSQL 16+
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",  # PostgreSQL 14+
    "deadlock_timeout",
    "track_activity_query_size",
)

SETTINGS: TextClause = text(
    "SELECT name, setting, unit, source, boot_val "
    "FROM pg_catalog.pg_settings WHERE name = ANY(CAST(:names AS text[]))"
)

PRIVILEGES: TextClause = text(
    """
    SELECT current_user::text AS role,
           current_database()::text AS database,
           r.rolsuper AS is_superuser,
           pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') AS read_all_stats,
           pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') AS signal_backend
    FROM pg_catalog.pg_roles r
    WHERE r.rolname = current_user
    """
)

# ALTER DATABASE / ALTER ROLE ... SET overrides that apply in this database.
DB_ROLE_SETTINGS: TextClause = text(
    """
    SELECT r.rolname::text AS role,
           d.setdatabase <> 0 AS this_database,
           cfg
    FROM pg_catalog.pg_db_role_setting d
    LEFT JOIN pg_catalog.pg_roles r ON r.oid = d.setrole
    CROSS JOIN LATERAL unnest(d.setconfig) AS cfg
    WHERE d.setdatabase IN (
        0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
    )
    """
)

# postgresql.conf / ALTER SYSTEM values; pg_file_settings is readable by superusers only.
FILE_SETTINGS: TextClause = text(
    "SELECT name, setting FROM pg_catalog.pg_file_settings "
    "WHERE applied AND error IS NULL AND name = ANY(CAST(:names AS text[])) ORDER BY seqno"
)

_SAMPLE_TEMPLATE = """
WITH locks AS MATERIALIZED (
    SELECT l.pid, l.locktype, l.mode, l.granted, l.database, l.relation,
           l.transactionid::text AS transactionid, l.virtualxid, l.objid,
           {waitstart} AS waitstart
    FROM pg_catalog.pg_locks l
    WHERE NOT l.granted OR l.locktype = 'tuple'
),
waits AS (
    SELECT DISTINCT ON (pid) * FROM locks WHERE NOT granted ORDER BY pid
),
tuples AS (
    SELECT DISTINCT ON (pid) pid, database, relation
    FROM locks WHERE granted AND locktype = 'tuple' ORDER BY pid
),
here AS (
    SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()
)
SELECT a.pid,
       a.backend_start,
       a.usename::text AS usename,
       a.application_name,
       host(a.client_addr) AS client_addr,
       a.state,
       a.wait_event_type,
       a.wait_event,
       a.xact_start,
       a.query_start,
       a.state_change,
       left(a.query, :query_chars) AS query,
       a.backend_type,
       a.datname::text AS datname,
       CASE WHEN w.pid IS NOT NULL OR a.wait_event_type = 'Lock'
            THEN pg_catalog.pg_blocking_pids(a.pid) END AS blocked_by,
       w.locktype AS wait_locktype,
       w.mode AS wait_mode,
       w.waitstart AS wait_start,
       w.transactionid AS wait_xid,
       w.virtualxid AS wait_vxid,
       w.objid AS wait_objid,
       coalesce(w.relation, t.relation) AS wait_relid,
       CASE WHEN c.oid IS NOT NULL
            THEN quote_ident(ns.nspname) || '.' || quote_ident(c.relname) END AS wait_relation,
       (SELECT clock_timestamp()) AS server_now
FROM pg_catalog.pg_stat_activity a
LEFT JOIN waits w ON w.pid = a.pid
LEFT JOIN tuples t ON t.pid = a.pid AND w.locktype = 'transactionid'
LEFT JOIN pg_catalog.pg_class c
       ON c.oid = coalesce(w.relation, t.relation)
      AND coalesce(w.database, t.database) = (SELECT oid FROM here)
LEFT JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
"""

# pg_locks.waitstart exists from PostgreSQL 14; before that the wait age falls back to
# the query age (an upper bound), flagged as approximate.
SAMPLE: TextClause = text(_SAMPLE_TEMPLATE.format(waitstart="l.waitstart"))
SAMPLE_PRE14: TextClause = text(_SAMPLE_TEMPLATE.format(waitstart="NULL::timestamptz"))

# --- relations a migration review watches ------------------------------------------------
# Every relation-level lock (held or awaited) of this database's other backends, with the
# relation resolved. System schemas (and other sessions' temporary tables) are left out:
# a migration does not lock them. :relnames narrows the rows to relations with one of these
# names (bare relname, any schema; NULL: every relation). A prepared transaction holds its
# locks with pid NULL, which is kept (IS DISTINCT FROM). pg_table_is_visible says whether
# an unqualified name in the dashboard's search_path means this relation.
_RELATION_LOCKS_TEMPLATE = """
SELECT l.pid,
       l.mode,
       l.granted,
       {waitstart} AS wait_start,
       ns.nspname::text AS schema,
       c.relname::text AS name,
       c.oid::regclass::text AS regclass,
       c.relkind::text AS relkind,
       pg_catalog.pg_table_is_visible(c.oid) AS visible
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_class c ON c.oid = l.relation
JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
WHERE l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
  AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND ns.nspname NOT LIKE 'pg\\_temp\\_%'
  AND ns.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
  AND (CAST(:relnames AS text[]) IS NULL OR c.relname = ANY(CAST(:relnames AS text[])))
ORDER BY l.granted DESC, l.pid, c.oid
"""

RELATION_LOCKS: TextClause = text(_RELATION_LOCKS_TEMPLATE.format(waitstart="l.waitstart"))
RELATION_LOCKS_PRE14: TextClause = text(
    _RELATION_LOCKS_TEMPLATE.format(waitstart="NULL::timestamptz")
)

# Row estimate and total size (heap + indexes + TOAST) for a list of relation names as the
# review area writes them: "table" or "schema.table", identifiers already folded by the
# parser (so each part is quoted before to_regclass, which would fold it again). Unknown
# names resolve to NULL and are simply absent. reltuples is -1 for a table never vacuumed or
# analysed (PostgreSQL 14+): NULL, "unknown". pg_total_relation_size takes an
# AccessShareLock on the relation: run it under a tight lock_timeout.
_RESOLVED = """
WITH wanted AS (
    SELECT n.name, n.ord,
           pg_catalog.to_regclass(
               CASE WHEN strpos(n.name, '.') > 0
                    THEN quote_ident(split_part(n.name, '.', 1)) || '.'
                         || quote_ident(substr(n.name, strpos(n.name, '.') + 1))
                    ELSE quote_ident(n.name) END
           ) AS oid
    FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS n(name, ord)
    WHERE n.name <> ''
)
SELECT w.name,
       ns.nspname::text AS schema,
       c.relname::text AS relname,
       c.relkind::text AS relkind,
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS rows_estimate,
       {size} AS bytes
FROM wanted w
JOIN pg_catalog.pg_class c ON c.oid = w.oid
JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
ORDER BY w.ord
"""

RELATION_SIZES: TextClause = text(_RESOLVED.format(size="pg_catalog.pg_total_relation_size(c.oid)"))
# The same from the catalog alone (no lock taken): pages of the relation, its indexes and its
# TOAST table as of the last VACUUM / ANALYZE / CREATE INDEX: an approximation.
RELATION_SIZES_CATALOG: TextClause = text(
    _RESOLVED.format(
        size="""(c.relpages::bigint
        + coalesce((SELECT sum(i.relpages) FROM pg_catalog.pg_index x
                    JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                    WHERE x.indrelid = c.oid), 0)
        + coalesce((SELECT t.relpages FROM pg_catalog.pg_class t
                    WHERE t.oid = c.reltoastrelid), 0)
       ) * current_setting('block_size')::bigint"""
    )
)

# --- actions ---------------------------------------------------------------------------
# One statement looks the backend up by pid, re-checks its identity and eligibility, and
# signals it only when every check passes (CASE evaluates the volatile call lazily). The
# checks are returned too, so a refusal can say exactly why.
_SIGNAL_TEMPLATE = """
SELECT a.pid,
       a.backend_start,
       a.datname::text AS datname,
       a.backend_type,
       a.application_name,
       a.usename::text AS usename,
       a.state,
       (a.backend_start = :backend_start) AS identity_ok,
       (a.datname = current_database()) AS same_database,
       (a.backend_type = 'client backend') AS client_backend,
       (coalesce(a.application_name, '') LIKE 'dashboard%' OR a.pid = pg_backend_pid())
           AS dashboard_own,
       CASE WHEN a.backend_start = :backend_start
             AND a.datname = current_database()
             AND a.backend_type = 'client backend'
             AND coalesce(a.application_name, '') NOT LIKE 'dashboard%'
             AND a.pid <> pg_backend_pid()
            THEN {call} END AS signalled
FROM pg_catalog.pg_stat_activity a
WHERE a.pid = :pid
"""

SIGNAL_CANCEL: TextClause = text(
    _SIGNAL_TEMPLATE.format(call="pg_catalog.pg_cancel_backend(a.pid)")
)
# PostgreSQL 14+: wait up to :wait_ms for the backend to exit, so the answer says whether
# it is gone rather than only that a signal was sent.
SIGNAL_TERMINATE: TextClause = text(
    _SIGNAL_TEMPLATE.format(call="pg_catalog.pg_terminate_backend(a.pid, :wait_ms)")
)
SIGNAL_TERMINATE_PRE14: TextClause = text(
    _SIGNAL_TEMPLATE.format(call="pg_catalog.pg_terminate_backend(a.pid)")
)

BACKEND_ALIVE: TextClause = text(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity "
    "WHERE pid = :pid AND backend_start = :backend_start) AS alive"
)
