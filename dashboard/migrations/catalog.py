"""The live catalog's leftovers: invalid indexes and NOT VALID constraints (SQL of this
area, one round trip).

Read after every migration run (by the runner) and with every status read (the
Migrations page, the Overview, `/api/migrations`). An index whose build is running right
now is also `indisvalid = false`; `pg_stat_progress_create_index` tells it apart, so a
page watching during a run does not cry wolf.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.migrations.leftovers import (
    INVALID_INDEX,
    SchemaWarning,
    building_index_warning,
    invalid_index_warning,
    not_valid_constraint_warning,
)

# Schemas never reported (besides those the caller excludes, e.g. the dashboard's own).
# pg_toast*, pg_temp_* and pg_toast_temp_* are excluded by prefix in the SQL.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

# Names are built with quote_ident (never regclass text, which drops the schema when it is
# on the search_path): the fix SQL is copied as is.
SCHEMA_WARNINGS_SQL = """
WITH building AS (
    SELECT p.pid, p.relid, p.index_relid, p.command, p.phase
    FROM pg_stat_progress_create_index p
    WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
), excluded AS (
    SELECT n.oid
    FROM pg_namespace n
    WHERE n.nspname = ANY (:excluded)
       OR left(n.nspname, 8) IN ('pg_toast', 'pg_temp_')
)
SELECT 'invalid_index' AS kind,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name,
       quote_ident(tn.nspname) || '.' || quote_ident(t.relname) AS table_name,
       i.indisunique AS is_unique,
       i.indisready AS is_ready,
       c.relkind = 'I' AS partitioned,
       b.pid AS building_pid,
       b.phase AS building_phase,
       NULL::text AS constraint_type,
       false AS on_domain
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN LATERAL (
    SELECT bb.pid, bb.phase
    FROM building bb
    WHERE bb.index_relid = i.indexrelid
       OR (bb.relid = i.indrelid AND (bb.index_relid = 0 OR bb.command LIKE 'REINDEX%'))
    ORDER BY bb.index_relid = i.indexrelid DESC
    LIMIT 1
) b ON true
WHERE NOT i.indisvalid
  AND c.relnamespace NOT IN (SELECT oid FROM excluded)
UNION ALL
SELECT 'not_valid_constraint',
       quote_ident(con.conname),
       quote_ident(n.nspname) || '.' || quote_ident(coalesce(t.relname, ty.typname)),
       false,
       false,
       false,
       NULL::integer,
       NULL::text,
       con.contype::text,
       con.conrelid = 0
FROM pg_constraint con
JOIN pg_namespace n ON n.oid = con.connamespace
LEFT JOIN pg_class t ON t.oid = con.conrelid AND con.conrelid <> 0
LEFT JOIN pg_type ty ON ty.oid = con.contypid AND con.contypid <> 0
WHERE NOT con.convalidated
  AND con.conparentid = 0
  AND (t.oid IS NOT NULL OR ty.oid IS NOT NULL)
  AND con.connamespace NOT IN (SELECT oid FROM excluded)
ORDER BY 1, 3, 2
"""

_QUERY = text(SCHEMA_WARNINGS_SQL).bindparams(bindparam("excluded", type_=ARRAY(Text)))

_CONSTRAINT_KINDS = {
    "f": "foreign key",
    "c": "check",
    "n": "not-null",
    "u": "unique",
    "p": "primary key",
    "x": "exclusion",
    "t": "trigger",
}


@dataclass(frozen=True)
class CatalogRow:
    """One row of SCHEMA_WARNINGS_SQL."""

    kind: str
    name: str
    table_name: str
    is_unique: bool
    is_ready: bool
    partitioned: bool
    building_pid: int | None
    building_phase: str | None
    constraint_type: str | None
    on_domain: bool

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> CatalogRow:
        return cls(
            kind=str(row["kind"]),
            name=str(row["name"]),
            table_name=str(row["table_name"]),
            is_unique=bool(row["is_unique"]),
            is_ready=bool(row["is_ready"]),
            partitioned=bool(row["partitioned"]),
            building_pid=row["building_pid"],
            building_phase=row["building_phase"],
            constraint_type=row["constraint_type"],
            on_domain=bool(row["on_domain"]),
        )


def warning_of(row: CatalogRow) -> SchemaWarning:
    """The warning a catalog row gives (pure)."""
    if row.kind == INVALID_INDEX:
        if row.building_pid is not None or row.building_phase is not None:
            return building_index_warning(
                row.name, row.table_name, pid=row.building_pid, phase=row.building_phase
            )
        return invalid_index_warning(
            row.name,
            row.table_name,
            unique=row.is_unique,
            ready=row.is_ready,
            partitioned=row.partitioned,
        )
    kind = _CONSTRAINT_KINDS.get(row.constraint_type or "", row.constraint_type or "?")
    return not_valid_constraint_warning(row.name, row.table_name, kind=kind, domain=row.on_domain)


def warnings_of(rows: Iterable[Mapping[Any, Any]]) -> list[SchemaWarning]:
    return [warning_of(CatalogRow.from_mapping(r)) for r in rows]


def _params(exclude_schemas: Sequence[str]) -> dict[str, list[str]]:
    return {"excluded": [*SYSTEM_SCHEMAS, *exclude_schemas]}


async def read_schema_warnings(
    conn: AsyncConnection, *, exclude_schemas: Sequence[str]
) -> list[SchemaWarning]:
    """Invalid indexes and NOT VALID constraints of the database `conn` is connected to,
    outside the system schemas and `exclude_schemas` (the dashboard's own). One query;
    it runs in the connection's current transaction (the caller ends it)."""
    result = await conn.execute(_QUERY, _params(exclude_schemas))
    return warnings_of(result.mappings().all())


def read_schema_warnings_sync(
    conn: Connection, *, exclude_schemas: Sequence[str]
) -> list[SchemaWarning]:
    """The same, for a sync connection (inside `AsyncConnection.run_sync`)."""
    result = conn.execute(_QUERY, _params(exclude_schemas))
    return warnings_of(result.mappings().all())
