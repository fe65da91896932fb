"""Who can change the dashboard's history, on real PostgreSQL (issue 11, item 9).

(a) One role that owns the dashboard's schema: the tamper check says "not protected",
    and rightly so: that role disables the append-only trigger and deletes audit rows.
(b) Two roles: an OWNER role runs the dashboard's migrations and grants a RUNTIME role
    exactly its privileges; the dashboard serves as the runtime role. The check says
    "protected", the runtime role cannot disable triggers nor UPDATE/DELETE/TRUNCATE the
    history, and the app works end to end for it (a run requested, approved, executed,
    every step in the audit log).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from dashboard.audit.log import AuditEvent, AuditLog
from dashboard.settings import Settings, SettingsError
from dashboard.state import admin
from dashboard.state.roles import APPEND_ONLY, RUNTIME_PRIVILEGES, assess
from dashboard.state.store import StateStore, StateUnavailable
from tests.approval_support import dashboard
from tests.migrate import alembic_to
from tests.runs_support import BASE, DEMO

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


@asynccontextmanager
async def fresh_roles(plain_db_url: str, db_name: str, *names: str) -> AsyncIterator[None]:
    """LOGIN roles for this test; everything they own or were granted is gone afterwards."""
    admin_conn = await asyncpg.connect(plain_db_url)
    try:
        for name in names:
            await admin_conn.execute(f'CREATE ROLE "{name}" LOGIN')
            await admin_conn.execute(f'GRANT CONNECT ON DATABASE "{db_name}" TO "{name}"')
        try:  # only the login itself depends on the server's pg_hba; nothing else may skip
            probe = await asyncpg.connect(as_role(plain_db_url, names[0]))
        except (OSError, asyncpg.PostgresError) as exc:  # pragma: no cover
            msg = f"cannot log in as a fresh role on this server: {exc}"
            if os.environ.get("CI"):
                pytest.fail(msg + " -- may not be skipped in CI")
            pytest.skip(msg)
        await probe.close()
        yield
    finally:
        for name in names:
            await admin_conn.execute(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER')
            await admin_conn.execute(f'DROP OWNED BY "{name}"')
        await admin_conn.close()
        other = await asyncpg.connect(
            make_url(plain_db_url).set(database="postgres").render_as_string(False)
        )
        try:
            for name in names:
                await other.execute(f'REVOKE ALL ON DATABASE "{db_name}" FROM "{name}"')
                await other.execute(f'DROP ROLE "{name}"')
        finally:
            await other.close()


async def write_audit(store: StateStore, n: int = 1) -> None:
    log = AuditLog(store)
    for i in range(n):
        await log.record(AuditEvent("ada", "test.write", "ok", detail={"i": i}))


async def test_single_role_owner_is_not_protected_and_really_can_delete(
    db_url: str, plain_db_url: str, db_name: str
) -> None:
    role = "dash_" + uuid.uuid4().hex[:10]
    async with fresh_roles(plain_db_url, db_name, role):
        su = await asyncpg.connect(plain_db_url)
        try:
            await su.execute(f'GRANT CREATE ON DATABASE "{db_name}" TO "{role}"')
        finally:
            await su.close()
        url = as_role(db_url, role)
        store = StateStore(url)
        try:
            await store.ensure()
            await write_audit(store, 3)
            check = store.tamper
            assert not check.protected and check.role == role
            assert f"the dashboard's role ({role}) owns the audit table dashboard.audit" in (
                check.reason
            )
            assert "it could disable the append-only triggers" in check.reason
            assert "README 'Two roles'" in check.reason
        finally:
            await store.stop()
        # the owner URL cannot be the runtime role itself
        same = StateStore(url, owner_url=url)
        try:
            with pytest.raises(StateUnavailable, match="are the same"):
                await same.ensure()
        finally:
            await same.stop()
        # the page and the API say so
        async with dashboard(url) as api:
            r = await api.get("vic", "/api/audit")
            assert r.status_code == 200, r.text
            assert r.json()["tamper_proof"]["protected"] is False
            assert "owns the audit table" in r.json()["tamper_proof"]["reason"]
            page = await api.get("vic", "/audit")
            assert 'id="audit-tamper" data-protected="false"' in page.text
            assert "The audit log is not tamper-proof." in page.text
            assert "Use a separate owner role: see README" in page.text
        # ...and it is right: the owner switches the trigger off and deletes the history
        conn = await asyncpg.connect(as_role(plain_db_url, role))
        try:
            assert await conn.fetchval("SELECT count(*) FROM dashboard.audit") >= 3
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # revoked, at first
                await conn.execute("DELETE FROM dashboard.audit")
            await conn.execute("ALTER TABLE dashboard.audit DISABLE TRIGGER ALL")
            await conn.execute("GRANT UPDATE, DELETE ON dashboard.audit TO CURRENT_USER")
            await conn.execute("UPDATE dashboard.audit SET actor = 'nobody'")
            await conn.execute("DELETE FROM dashboard.audit")
            assert await conn.fetchval("SELECT count(*) FROM dashboard.audit") == 0
        finally:
            await conn.close()


async def test_two_roles_runtime_cannot_alter_history_and_the_app_works(
    db_url: str, plain_db_url: str, db_name: str
) -> None:
    suffix = uuid.uuid4().hex[:10]
    owner, runtime = f"dash_owner_{suffix}", f"dash_app_{suffix}"
    async with fresh_roles(plain_db_url, db_name, owner, runtime):
        su = await asyncpg.connect(plain_db_url)
        try:
            # What the README's "Two roles" tells an admin to run (no CREATE on the database
            # for either role), plus the target-side rights the runtime role needs to run
            # the demo application's own migrations in `public`.
            await su.execute(f'CREATE SCHEMA dashboard AUTHORIZATION "{owner}"')
            await su.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{runtime}"')
            owner_url, runtime_url = as_role(db_url, owner), as_role(db_url, runtime)
            settings = Settings(
                database_url=runtime_url, script_location=DEMO, state_owner_url=owner_url
            )
            # `dashboard state upgrade`, as a deployment step: owner credentials only
            applied, granted = await admin.upgrade(settings)
            assert applied and granted == runtime
            # a serving process with the owner URL: migrations current, grants re-applied
            store = StateStore(runtime_url, owner_url=owner_url)
            try:
                await store.ensure()
                assert store.applied == []
                assert store.tamper.protected, store.tamper.reason
                assert store.tamper.role == runtime
                assert store.tamper.reason.startswith(
                    f"append-only, enforced: the running role {runtime} cannot alter audit rows"
                )
                await write_audit(store)
                # an admin switching a trigger off is reported at the next check
                await su.execute("ALTER TABLE dashboard.audit DISABLE TRIGGER audit_no_truncate")
                off = await store.check_tamper()
                assert not off.protected and "audit_no_truncate on dashboard.audit" in off.reason
                await su.execute("ALTER TABLE dashboard.audit ENABLE TRIGGER audit_no_truncate")
                assert (await store.check_tamper()).protected
            finally:
                await store.stop()
            await exactly_the_runtime_privileges(su, runtime)
            await runtime_cannot_change_history(as_role(plain_db_url, runtime), runtime)

            # end to end, serving as the runtime role
            await alembic_to(runtime_url, DEMO, BASE)
            async with dashboard(runtime_url, DASHBOARD_STATE_OWNER_URL=owner_url) as api:
                run_id = (await api.request_run("carol", [BASE]))["id"]
                run = await api.run(run_id)
                ok = await api.post(
                    "bob", f"/api/runs/{run_id}/approve", {"sql_sha256": run["sql_sha256"]}
                )
                assert ok.status_code == 200, ok.text
                go = await api.post("carol", f"/api/runs/{run_id}/execute")
                assert go.status_code == 202, go.text
                done = await api.finished(run_id)
                assert done["status"] == "succeeded", done
                assert done["log"], done
                r = await api.get("vic", "/api/audit")
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["tamper_proof"]["protected"] is True, body["tamper_proof"]
                assert body["tamper_proof"]["role"] == runtime
                actions = {(e["action"], e["actor"]) for e in body["entries"]}
                assert {
                    ("run.request", "carol"),
                    ("run.approve", "bob"),
                    ("run.execute", "carol"),
                } <= actions
                page = await api.get("vic", "/audit")
                assert 'id="audit-tamper" data-protected="true"' in page.text
                assert "append-only, enforced: the running role" in page.text
                assert "not tamper-proof" not in page.text
            assert await su.fetchval("SELECT count(*) FROM dashboard.approvals") == 1
            assert (
                await su.fetchval("SELECT count(*) FROM dashboard.audit WHERE action LIKE 'run.%'")
                >= 3
            )
            owners = await su.fetch(
                "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'dashboard'"
            )
            assert [o[0] for o in owners] == [owner]
        finally:
            await su.close()


async def test_a_one_role_install_moves_to_two_roles(
    db_url: str, plain_db_url: str, db_name: str
) -> None:
    """README "Two roles", existing installs: hand the objects to the owner role, upgrade
    as the owner, and the former owner keeps exactly the runtime privileges."""
    suffix = uuid.uuid4().hex[:10]
    owner, runtime = f"dash_owner_{suffix}", f"dash_app_{suffix}"
    async with fresh_roles(plain_db_url, db_name, owner, runtime):
        su = await asyncpg.connect(plain_db_url)
        try:
            await su.execute(f'GRANT CREATE ON DATABASE "{db_name}" TO "{runtime}"')
            runtime_url, owner_url = as_role(db_url, runtime), as_role(db_url, owner)
            single = StateStore(runtime_url)
            try:
                await single.ensure()
                await write_audit(single, 2)
                assert not single.tamper.protected
            finally:
                await single.stop()
            for sql in MOVE_TO_OWNER:
                await su.execute(sql.format(owner=owner))
            await su.execute(f'REVOKE CREATE ON DATABASE "{db_name}" FROM "{runtime}"')
            store = StateStore(runtime_url, owner_url=owner_url)
            try:
                await store.ensure()
                assert store.applied == [] and store.tamper.protected, store.tamper.reason
                await write_audit(store)
            finally:
                await store.stop()
            await exactly_the_runtime_privileges(su, runtime)
            await runtime_cannot_change_history(as_role(plain_db_url, runtime), runtime)
            assert await su.fetchval("SELECT count(*) FROM dashboard.audit") == 3
        finally:
            await su.close()


# The README's statements for moving an existing install (objects created by the runtime role).
MOVE_TO_OWNER = (
    "ALTER SCHEMA dashboard OWNER TO {owner}",
    "ALTER TABLE dashboard.runs OWNER TO {owner}",
    "ALTER TABLE dashboard.run_log OWNER TO {owner}",
    "ALTER TABLE dashboard.audit OWNER TO {owner}",
    "ALTER TABLE dashboard.approvals OWNER TO {owner}",
    "ALTER TABLE dashboard.dashboard_version OWNER TO {owner}",
    "ALTER TABLE dashboard.samples OWNER TO {owner}",
    "ALTER TABLE dashboard.incidents OWNER TO {owner}",
    "ALTER TABLE dashboard.fleet_pools OWNER TO {owner}",
    "ALTER TABLE dashboard.login_sessions OWNER TO {owner}",
    "ALTER TABLE dashboard.login_failures OWNER TO {owner}",
    "ALTER FUNCTION dashboard.audit_append_only() OWNER TO {owner}",
    "ALTER FUNCTION dashboard.approvals_append_only() OWNER TO {owner}",
)


async def exactly_the_runtime_privileges(su: asyncpg.Connection, runtime: str) -> None:
    """Every table of the migrated schema is declared, and the runtime role holds exactly
    what is declared for it: nothing more on tables, USAGE on the schema and sequences."""
    tables = {
        r[0]
        for r in await su.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'dashboard'")
    }
    assert tables == set(RUNTIME_PRIVILEGES), "declare the runtime privileges of new tables"
    for table in sorted(tables):
        for priv in TABLE_PRIVILEGES:
            held = await su.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", runtime, f"dashboard.{table}", priv
            )
            assert held == (priv in RUNTIME_PRIVILEGES[table]), (table, priv, held)
        assert (
            not await su.fetchval(
                "SELECT has_any_column_privilege($1, $2, 'UPDATE')", runtime, f"dashboard.{table}"
            )
            or "UPDATE" in RUNTIME_PRIVILEGES[table]
        )
    assert await su.fetchval("SELECT has_schema_privilege($1, 'dashboard', 'USAGE')", runtime)
    assert not await su.fetchval("SELECT has_schema_privilege($1, 'dashboard', 'CREATE')", runtime)
    sequences = await su.fetch(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = 'dashboard'"
    )
    assert sequences
    for (seq,) in sequences:
        for priv, expected in (("USAGE", True), ("SELECT", False), ("UPDATE", False)):
            assert (
                await su.fetchval(
                    "SELECT has_sequence_privilege($1, $2, $3)", runtime, f"dashboard.{seq}", priv
                )
                == expected
            ), (seq, priv)


async def runtime_cannot_change_history(plain_runtime_url: str, runtime: str) -> None:
    conn = await asyncpg.connect(plain_runtime_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM dashboard.audit") >= 1
        for table, triggers in APPEND_ONLY.items():
            rel = f"dashboard.{table}"
            for sql in (
                f"ALTER TABLE {rel} DISABLE TRIGGER ALL",
                f"ALTER TABLE {rel} DISABLE TRIGGER USER",
                f"ALTER TABLE {rel} DISABLE TRIGGER {triggers[1]}",
                f"ALTER TABLE {rel} OWNER TO CURRENT_USER",
                f"UPDATE {rel} SET id = id",
                f"DELETE FROM {rel}",
                f"TRUNCATE {rel}",
                f"TRUNCATE {rel} CASCADE",
                f"DROP TABLE {rel}",
                f"ALTER TABLE {rel} RENAME TO {table}_old",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
            # granting itself the privileges back does nothing (PostgreSQL only warns)
            await conn.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON {rel} TO CURRENT_USER")
            for priv in ("UPDATE", "DELETE", "TRUNCATE"):
                assert not await conn.fetchval("SELECT has_table_privilege($1, $2)", rel, priv)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET session_replication_role = replica")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE dashboard.audit_shadow (id int)")
        assert await conn.fetchval("SELECT current_user") == runtime
        assert await conn.fetchval("SELECT count(*) FROM dashboard.audit") >= 1
    finally:
        await conn.close()


def test_owner_url_setting_is_validated() -> None:
    base = {"DASHBOARD_SCRIPT_LOCATION": str(DEMO)}
    assert Settings.from_env(base).state_owner_url is None
    s = Settings.from_env(
        {**base, "DASHBOARD_STATE_OWNER_URL": "postgresql://dash_owner:pw@db:5432/app"}
    )
    assert s.state_owner_url == "postgresql+asyncpg://dash_owner:pw@db:5432/app"
    for bad in ("mysql://u@h/db", "not a url", "postgresql://u@h", "postgresql+psycopg://u@h/d"):
        with pytest.raises(SettingsError) as err:
            Settings.from_env({**base, "DASHBOARD_STATE_OWNER_URL": bad})
        assert err.value.variable == "DASHBOARD_STATE_OWNER_URL", bad


def row(table: str, **over: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "table": table,
        "role": "app",
        "superuser": False,
        "owner": "dash_owner",
        "schema_owner": "dash_owner",
        "owns_table": False,
        "member_of_owner": False,
        "owns_schema": False,
        "can_update": False,
        "can_delete": False,
        "can_truncate": False,
        "enabled_triggers": list(APPEND_ONLY[table]),
    }
    values.update(over)
    return values


@pytest.mark.parametrize(
    ("audit", "approvals", "protected", "words"),
    [
        ({}, {}, True, "append-only, enforced: the running role app cannot alter audit rows"),
        ({"superuser": True}, {}, False, "is a superuser"),
        ({"owns_table": True, "member_of_owner": True}, {}, False, "owns the audit table"),
        ({"member_of_owner": True}, {}, False, "is a member of dash_owner"),
        ({}, {"owns_schema": True}, False, "owns the schema dashboard"),
        ({"can_update": True}, {}, False, "holds UPDATE on dashboard.audit"),
        ({}, {"can_delete": True, "can_truncate": True}, False, "holds DELETE, TRUNCATE"),
        ({"enabled_triggers": ["audit_no_truncate"]}, {}, False, "audit_no_update_delete"),
        ({}, {"enabled_triggers": []}, False, "triggers approvals_no_truncate, approvals_no"),
    ],
)
def test_assess(
    audit: dict[str, Any], approvals: dict[str, Any], protected: bool, words: str
) -> None:
    check = assess([row("audit", **audit), row("approvals", **approvals)], "dashboard", "app")
    assert check.protected is protected and words in check.reason, check
    assert check.to_json() == {"protected": protected, "reason": check.reason, "role": "app"}
    if not protected and "append-only trigger" not in check.reason:
        assert "see README 'Two roles'" in check.reason
    missing = assess([row("approvals")], "dashboard", "app")
    assert not missing.protected and "dashboard.audit does not exist" in missing.reason
