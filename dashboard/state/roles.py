"""Who may change the dashboard's history: the two-role setup and the tamper check.

Revoking UPDATE/DELETE/TRUNCATE from a table's owner is not tamper-proofing: the owner
can `ALTER TABLE … DISABLE TRIGGER` and grant itself the privileges back (a superuser
can do anything). The history is only protected when the role the dashboard *serves*
with (the runtime role) does not own the audit and approvals tables, nor their schema,
and holds no privilege that changes rows.

- `grant_runtime()`: run by the OWNER role after the state migrations (see
  `migrate.upgrade_state_schema(runtime_role=…)`): the runtime role gets exactly
  `RUNTIME_PRIVILEGES` on the schema's tables, USAGE on the schema and its sequences,
  nothing else. Idempotent (everything is revoked, then granted, in one transaction).
- `check_tamper()`: run as the RUNTIME role at start-up: can this role alter audit rows?
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.state.model import VERSION_TABLE

log = logging.getLogger(__name__)

README_HINT = "Use a separate owner role: see README 'Two roles'."

# Every table of the dashboard's schema and what the runtime role may do with it. A
# migration that adds a table adds it here (tests/test_state_roles.py checks that no
# table of the migrated schema is missing). The version table is readable so that a
# runtime process without the owner's credentials can confirm the schema is current.
RUNTIME_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "runs": ("SELECT", "INSERT", "UPDATE"),
    "run_log": ("SELECT", "INSERT"),
    "audit": ("SELECT", "INSERT"),
    "approvals": ("SELECT", "INSERT"),
    # history: retention deletes and downsampling rewrites old samples; incidents close
    "samples": ("SELECT", "INSERT", "DELETE"),
    "incidents": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "fleet_pools": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "login_sessions": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "login_failures": ("SELECT", "INSERT", "DELETE"),
    VERSION_TABLE: ("SELECT",),
}
# The append-only tables and the triggers that refuse UPDATE, DELETE and TRUNCATE.
APPEND_ONLY: dict[str, tuple[str, ...]] = {
    "audit": ("audit_no_truncate", "audit_no_update_delete"),
    "approvals": ("approvals_no_truncate", "approvals_no_update_delete"),
}


class GrantError(RuntimeError):
    """The owner role could not give the runtime role what it needs."""


@dataclass(frozen=True)
class TamperCheck:
    """Can the role the dashboard runs as alter audit (and approval) rows?"""

    protected: bool
    reason: str
    role: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"protected": self.protected, "reason": self.reason, "role": self.role}


NOT_CHECKED = TamperCheck(False, "not checked yet: the dashboard schema is not ready")


# -- the owner's side: grants ---------------------------------------------------------
def grant_runtime(conn: Connection, schema: str, role: str) -> list[str]:
    """Give `role` exactly the runtime privileges on `schema` (inside the caller's
    transaction, as the owner). Returns the schema's tables that have no declared
    privileges (they get none). Raises GrantError when a grant did not take (PostgreSQL
    only warns when a non-owner grants)."""
    prep = conn.dialect.identifier_preparer
    q, r = prep.quote_schema(schema), prep.quote(role)
    me = conn.execute(text("SELECT current_user")).scalar_one()
    if me == role:
        raise GrantError(
            f"the owner role and the runtime role are the same ({role!r}): "
            "DASHBOARD_STATE_OWNER_URL must log in as a different role"
        )
    tables = _tables(conn, schema)
    conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {q} FROM {r}"))
    conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {q} FROM {r}"))
    conn.execute(text(f"REVOKE ALL ON SCHEMA {q} FROM {r}"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA {q} TO {r}"))
    for table, privileges in RUNTIME_PRIVILEGES.items():
        if table in tables:
            conn.execute(text(f"GRANT {', '.join(privileges)} ON {q}.{prep.quote(table)} TO {r}"))
    conn.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {q} TO {r}"))
    missing = [
        f"{table}: {priv}"
        for table, privileges in RUNTIME_PRIVILEGES.items()
        if table in tables
        for priv in privileges
        if not conn.execute(
            text("SELECT has_table_privilege(:role, :rel, :priv)"),
            {"role": role, "rel": f"{q}.{prep.quote(table)}", "priv": priv},
        ).scalar_one()
    ]
    if missing:
        raise GrantError(
            f"the owner role {me!r} could not grant {role!r} {', '.join(missing)} in schema "
            f"{schema!r}: the tables must be owned by the role of DASHBOARD_STATE_OWNER_URL"
        )
    undeclared = sorted(tables - RUNTIME_PRIVILEGES.keys())
    if undeclared:
        log.warning(
            "dashboard schema %r: no runtime privileges declared for %s (granted nothing)",
            schema,
            ", ".join(undeclared),
        )
    return undeclared


def _tables(conn: Connection, schema: str) -> set[str]:
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
        ),
        {"schema": schema},
    )
    return {row[0] for row in rows}


# -- the runtime's side: the check -----------------------------------------------------
_CHECK = text(
    """
    SELECT c.relname AS table, r.rolname AS role, r.rolsuper AS superuser,
           pg_get_userbyid(c.relowner) AS owner, pg_get_userbyid(n.nspowner) AS schema_owner,
           c.relowner = r.oid AS owns_table,
           pg_has_role(r.oid, c.relowner, 'MEMBER') AS member_of_owner,
           pg_has_role(r.oid, n.nspowner, 'MEMBER') AS owns_schema,
           has_any_column_privilege(r.oid, c.oid, 'UPDATE') AS can_update,
           has_table_privilege(r.oid, c.oid, 'DELETE') AS can_delete,
           has_table_privilege(r.oid, c.oid, 'TRUNCATE') AS can_truncate,
           ARRAY(SELECT t.tgname::text FROM pg_trigger t
                 WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
                 ORDER BY 1) AS enabled_triggers
    FROM pg_roles r
    JOIN pg_namespace n ON n.nspname = :schema
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
                   AND c.relname IN ('audit', 'approvals')
    WHERE r.rolname = current_user
    ORDER BY c.relname DESC
    """
)


async def check_tamper(conn: AsyncConnection, schema: str) -> TamperCheck:
    """What the role of `conn` could do to the append-only tables of `schema`."""
    rows = [dict(r._mapping) for r in await conn.execute(_CHECK, {"schema": schema})]
    role = (await conn.execute(text("SELECT current_user"))).scalar_one()
    return assess(rows, schema, role)


def assess(rows: list[dict[str, Any]], schema: str, role: str) -> TamperCheck:
    """The verdict from the catalog rows of `_CHECK` (audit first, then approvals)."""
    found = {row["table"]: row for row in rows}
    for table in APPEND_ONLY:
        if table not in found:
            return TamperCheck(False, f"the table {schema}.{table} does not exist", role)
    who = f"the dashboard's role ({role})"
    for table, row in found.items():
        rel = f"{schema}.{table}"
        what = "audit" if table == "audit" else "approval"
        if row["superuser"]:
            return TamperCheck(
                False,
                f"{who} is a superuser: it could disable the append-only triggers and "
                f"change or delete {what} rows. {README_HINT}",
                role,
            )
        if row["owns_table"]:
            return TamperCheck(
                False,
                f"{who} owns the {what} table {rel}: it could disable the append-only "
                f"triggers and grant itself UPDATE and DELETE back. {README_HINT}",
                role,
            )
        if row["member_of_owner"]:
            return TamperCheck(
                False,
                f"{who} is a member of {row['owner']}, which owns the {what} table {rel}: "
                f"it could disable the append-only triggers. {README_HINT}",
                role,
            )
        if row["owns_schema"]:
            return TamperCheck(
                False,
                f"{who} owns the schema {schema} (or is a member of its owner "
                f"{row['schema_owner']}): it could drop and replace the {what} table. "
                f"{README_HINT}",
                role,
            )
        privileges = [
            name
            for name, held in (
                ("UPDATE", row["can_update"]),
                ("DELETE", row["can_delete"]),
                ("TRUNCATE", row["can_truncate"]),
            )
            if held
        ]
        if privileges:
            return TamperCheck(
                False,
                f"{who} holds {', '.join(privileges)} on {rel}: revoke it "
                f"(REVOKE UPDATE, DELETE, TRUNCATE ON {rel} FROM {role}). {README_HINT}",
                role,
            )
        off = sorted(set(APPEND_ONLY[table]) - set(row["enabled_triggers"]))
        if off:
            return TamperCheck(
                False,
                f"the append-only trigger{'s' if len(off) > 1 else ''} {', '.join(off)} on "
                f"{rel} {'are' if len(off) > 1 else 'is'} disabled or missing: nothing stops "
                f"its owner ({row['owner']}) or a superuser from changing rows "
                f"(as the owner: ALTER TABLE {rel} ENABLE TRIGGER USER)",
                role,
            )
    owners = sorted({row["owner"] for row in found.values()})
    return TamperCheck(
        True,
        f"append-only, enforced: the running role {role} cannot alter audit rows "
        f"({', '.join(f'{schema}.{t}' for t in APPEND_ONLY)} owned by {', '.join(owners)})",
        role,
    )
