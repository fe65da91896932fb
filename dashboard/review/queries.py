"""SQL text of the review area: scratch databases for rehearsals, and the rehearsal
connection's own relation locks.

Parameters are bound, never formatted in. CREATE / DROP DATABASE take no parameters, so
their one identifier is quoted by SQLAlchemy's PostgreSQL identifier preparer, and only
names this module makes (`scratch_name`) are accepted.
"""

from __future__ import annotations

import re
import secrets
import time

from sqlalchemy import TextClause, text
from sqlalchemy.dialects import postgresql

# A scratch database is named dashboard_rehearsal_<unix seconds>_<8 hex>: recognisable as
# the dashboard's, and its age readable from the name (pg_database keeps no creation time).
SCRATCH_PREFIX = "dashboard_rehearsal_"
_SCRATCH_NAME = re.compile(r"^dashboard_rehearsal_(\d{10})_[0-9a-f]{8}$")

_PREPARER = postgresql.dialect().identifier_preparer


def scratch_name(now: float | None = None) -> str:
    """A fresh scratch database name carrying its creation time."""
    stamp = int(time.time() if now is None else now)
    return f"{SCRATCH_PREFIX}{stamp:010d}_{secrets.token_hex(4)}"


def scratch_created_at(name: str) -> int | None:
    """The creation time (unix seconds) in a scratch database's name; None: not one."""
    found = _SCRATCH_NAME.match(name)
    return int(found.group(1)) if found else None


def _scratch_identifier(name: str) -> str:
    if scratch_created_at(name) is None:
        raise ValueError(f"not a rehearsal scratch database name: {name!r}")
    return str(_PREPARER.quote(name))


def create_database_sql(name: str) -> str:
    """CREATE DATABASE for a scratch database, copied from template0 (the pristine
    template: nothing an administrator added to template1, and no "source database is
    being accessed by other users" when someone is connected to template1)."""
    return f"CREATE DATABASE {_scratch_identifier(name)} TEMPLATE template0"


def drop_database_sql(name: str) -> str:
    """DROP DATABASE for a scratch database, ending any session still connected to it."""
    return f"DROP DATABASE IF EXISTS {_scratch_identifier(name)} WITH (FORCE)"


# Scratch databases on the server (the prefix's underscores escaped for LIKE).
SCRATCH_DATABASES: TextClause = text(
    "SELECT datname FROM pg_database WHERE datname LIKE :pattern ORDER BY datname"
).bindparams(pattern=SCRATCH_PREFIX.replace("_", r"\_") + "%")

# Relation locks the own backend holds in the current database, granted. The relation's
# name and kind when the catalog still has it (a relation dropped by the statement does
# not resolve: see RELATIONS). Run through the DBAPI cursor (no bound parameters).
OWN_RELATION_LOCKS = """
SELECT l.relation::bigint AS oid, l.mode, n.nspname, c.relname, c.relkind::text
FROM pg_catalog.pg_locks l
LEFT JOIN pg_catalog.pg_class c ON c.oid = l.relation
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_catalog.pg_backend_pid()
  AND l.locktype = 'relation'
  AND l.granted
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                    WHERE d.datname = pg_catalog.current_database())
"""

# The user relations of the current database (oid, schema, name, kind), so a lock on a
# relation the statement dropped can still be named.
RELATIONS = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""

# Relation kinds whose locks a rehearsal reports: tables, partitioned tables, views,
# materialized views, foreign tables (not indexes, sequences, TOAST tables).
TABLE_KINDS = frozenset({"r", "p", "v", "m", "f"})
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
