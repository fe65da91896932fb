"""What a migration run left behind, named without a database: the warning records, the
catalog rows' messages, a failed revision's non-transactional steps (pglast), merging."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dashboard.migrations.catalog import CatalogRow, warning_of
from dashboard.migrations.leftovers import (
    INVALID_INDEX,
    LEFTOVER_OBJECT,
    NOT_VALID_CONSTRAINT,
    SchemaWarning,
    building_index_warning,
    invalid_index_warning,
    leftover_warnings,
    merge_warnings,
    not_valid_constraint_warning,
)
from dashboard.migrations.status import MigrationStatus
from dashboard.runs.views import run_json
from tests.records_support import a_run

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def test_json_round_trip_and_required_fields() -> None:
    w = invalid_index_warning("public.ix", "public.t", unique=True, ready=True)
    data = w.to_json()
    assert {"kind", "name", "message", "table", "fix"} <= set(data)
    assert SchemaWarning.from_json(data) == w
    # the minimal DESIGN shape is enough
    minimal = SchemaWarning.from_json({"kind": "leftover_object", "name": "x", "message": "m"})
    assert minimal == SchemaWarning("leftover_object", "x", "m")
    with pytest.raises(ValueError):
        SchemaWarning.from_json({"kind": "invalid_index", "name": "x"})
    with pytest.raises(ValueError):
        SchemaWarning.from_json({"kind": "invalid_index", "name": 3, "message": "m"})


def test_invalid_index_message_depends_on_what_the_build_reached() -> None:
    dead = invalid_index_warning('public."Ix"', 'public."Odd T"', unique=True, ready=False)
    assert dead.kind == INVALID_INDEX and dead.name == 'public."Ix"'
    assert dead.table == 'public."Odd T"'
    assert dead.fix == 'DROP INDEX CONCURRENTLY public."Ix";'
    assert "INVALID" in dead.message and "planner ignores it" in dead.message
    assert "do not maintain it" in dead.message and "rejects" not in dead.message
    assert "IF NOT EXISTS" in dead.message
    live = invalid_index_warning("s.ix", "s.t", unique=True, ready=True)
    assert "still maintains it" in live.message and "rejects new duplicate" in live.message
    plain = invalid_index_warning("s.ix", "s.t", unique=False, ready=True)
    assert "rejects" not in plain.message
    part = invalid_index_warning("s.pix", "s.parted", partitioned=True)
    assert "ATTACH PARTITION" in part.message and part.fix == "DROP INDEX s.pix;"


def test_an_index_being_built_is_not_a_leftover() -> None:
    w = building_index_warning("public.ix", "public.t", pid=42, phase="building index")
    assert w.kind == INVALID_INDEX and w.in_progress and w.fix is None
    assert "being built right now" in w.message and "42" in w.message
    row = CatalogRow(
        kind=INVALID_INDEX,
        name="public.ix",
        table_name="public.t",
        is_unique=False,
        is_ready=False,
        partitioned=False,
        building_pid=42,
        building_phase="building index",
        constraint_type=None,
        on_domain=False,
    )
    assert warning_of(row) == w
    leftover = warning_of(
        CatalogRow(**{**row.__dict__, "building_pid": None, "building_phase": None})
    )
    assert not leftover.in_progress and leftover.fix == "DROP INDEX CONCURRENTLY public.ix;"


def test_not_valid_constraint_message_and_fix() -> None:
    w = not_valid_constraint_warning("fk_child", 'public."Child"', kind="foreign key")
    assert w.kind == NOT_VALID_CONSTRAINT and w.name == 'public."Child".fk_child'
    assert w.fix == 'ALTER TABLE public."Child" VALIDATE CONSTRAINT fk_child;'
    assert "SHARE UPDATE EXCLUSIVE" in w.message and "existing rows" in w.message
    d = not_valid_constraint_warning("pos", "public.posint", kind="check", domain=True)
    assert d.fix == "ALTER DOMAIN public.posint VALIDATE CONSTRAINT pos;"
    row = CatalogRow(
        kind=NOT_VALID_CONSTRAINT,
        name="ck",
        table_name="public.t",
        is_unique=False,
        is_ready=False,
        partitioned=False,
        building_pid=None,
        building_phase=None,
        constraint_type="c",
        on_domain=False,
    )
    assert "check constraint ck" in warning_of(row).message


def test_leftovers_of_a_failed_revisions_autocommit_steps() -> None:
    ws = leftover_warnings(
        "abc123",
        [
            'CREATE INDEX CONCURRENTLY ix_a ON app."Orders" (a)',
            "CREATE UNIQUE INDEX CONCURRENTLY ON orders (b)",
            "ALTER TYPE mood ADD VALUE 'meh'",
            "SET lock_timeout = '3s'",
            "VACUUM orders",
            "CREATE TABLE IF NOT EXISTS audit.trail (id int)",
            "DROP INDEX CONCURRENTLY IF EXISTS old_ix",
        ],
    )
    assert [w.kind for w in ws] == [LEFTOVER_OBJECT] * 5
    by_name = {w.name: w for w in ws}
    ix = by_name["app.ix_a"]
    assert ix.table == 'app."Orders"' and ix.fix == "DROP INDEX CONCURRENTLY app.ix_a;"
    assert "abc123" in ix.message and "is not applied" in ix.message
    assert "IF NOT EXISTS" in ix.message
    unnamed = by_name["unnamed index on orders"]
    assert unnamed.fix is None and "duplicate index" in unnamed.message
    enum = by_name["mood value 'meh'"]
    assert "ADD VALUE IF NOT EXISTS" in enum.message
    assert by_name["audit.trail"].fix == "DROP TABLE audit.trail;"
    assert "was dropped" in by_name["old_ix"].message


def test_unparseable_sql_still_warns_with_its_beginning() -> None:
    sql = "CREAT INDEX oops ON t (a) " + "x" * 300
    (w,) = leftover_warnings("r1", [sql])
    assert w.kind == LEFTOVER_OBJECT
    assert w.name == sql[:120] and len(w.name) == 120
    assert w.name in w.message and "r1" in w.message


def test_unknown_statements_are_named_by_their_text_and_data_changes_kept() -> None:
    ws = leftover_warnings("r2", ["GRANT SELECT ON t TO app; UPDATE t SET a = 1 WHERE b"])
    assert [w.name for w in ws] == ["GRANT SELECT ON t TO app", "data in t"]
    assert "must not apply them twice" in ws[1].message


def test_merge_keeps_order_and_first_of_each_kind_and_name() -> None:
    a = SchemaWarning(INVALID_INDEX, "public.ix", "first")
    b = SchemaWarning(LEFTOVER_OBJECT, "public.ix", "other kind")
    c = SchemaWarning(INVALID_INDEX, "public.ix", "second")
    d = SchemaWarning(NOT_VALID_CONSTRAINT, "public.t.fk", "fk")
    assert merge_warnings([a, b], [c, d], []) == [a, b, d]
    assert merge_warnings() == []


def test_status_json_carries_schema_warnings() -> None:
    w = invalid_index_warning("public.ix", "public.t")
    status = MigrationStatus(state="up_to_date", explanation="", current=[], heads=[])
    assert status.to_json()["schema_warnings"] == []
    status.schema_warnings = [w]
    data = status.to_json()
    assert data["schema_warnings"] == [w.to_json()]
    assert data["schema_warnings_note"] is None


def test_run_json_attempts_warnings_clean() -> None:
    w = invalid_index_warning("public.ix", "public.t").to_json()
    ok = run_json(a_run(status="succeeded"), None, now=NOW)
    assert (ok["attempts"], ok["warnings"], ok["clean"]) == (0, [], True)
    warned = run_json(a_run(status="succeeded", attempts=3, warnings=[w]), None, now=NOW)
    assert (warned["attempts"], warned["warnings"], warned["clean"]) == (3, [w], False)
    failed = run_json(a_run(status="failed", warnings=[]), None, now=NOW)
    assert failed["clean"] is False
    live = run_json(
        a_run(status="running", attempts=1), None, now=NOW, live_progress={"attempts": 4}
    )
    assert live["attempts"] == 4
