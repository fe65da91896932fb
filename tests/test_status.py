"""Revision status against a real PostgreSQL: every state, read without env.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from dashboard.db import create_diagnostics_engine
from dashboard.migrations.status import MigrationStatus, RevisionInfo, StatusService
from dashboard.targets import Target
from tests.migrate import alembic_to

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "alembic"
BASE = "8b2e4d6f1a02"
HEAD = "2c3e48f90d09"
ALL = [
    "8b2e4d6f1a02",
    "c4d8e1f2a903",
    "d5e9f3a4b804",
    "e6fa04b5c905",
    "f70b15c6da06",
    "0a1c26d7eb07",
    "1b2d37e8fc08",
    "2c3e48f90d09",
]


async def read(db_url: str, scripts: Path = DEMO, **target: str) -> MigrationStatus:
    engine = create_diagnostics_engine(db_url)
    try:
        return await StatusService(engine, Target("main", scripts, **target)).read(fresh=True)
    finally:
        await engine.dispose()


def assert_apply_order(pending: Sequence[RevisionInfo]) -> None:
    """Every pending revision comes after all of its down revisions."""
    seen: set[str] = set()
    listed = {p.revision for p in pending}
    for r in pending:
        d = r.down_revision
        downs = [] if d is None else ([d] if isinstance(d, str) else d)
        for down in downs:
            assert down in seen or down not in listed, (r, seen)
        seen.add(r.revision)


async def test_empty_database_is_uninitialized(db_url: str) -> None:
    st = await read(db_url)
    assert st.state == "uninitialized"
    assert st.current == []
    assert st.heads == [HEAD]
    assert sorted(p.revision for p in st.pending) == sorted(ALL)
    assert st.pending[0].revision == BASE
    assert_apply_order(st.pending)


async def test_pending_in_apply_order_with_merge_branch_and_irreversible(db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    st = await read(db_url)
    assert st.state == "pending"
    assert st.current == [BASE]
    assert [p.revision for p in st.pending][-4:] == [
        "f70b15c6da06",
        "0a1c26d7eb07",
        "1b2d37e8fc08",
        HEAD,
    ]
    assert len(st.pending) == 7
    assert_apply_order(st.pending)
    by_rev = {p.revision: p for p in st.pending}
    assert by_rev["e6fa04b5c905"].is_merge_point
    assert by_rev["e6fa04b5c905"].down_revision == ["c4d8e1f2a903", "d5e9f3a4b804"]
    assert by_rev["c4d8e1f2a903"].branch_labels == ["catalog"]
    assert by_rev[HEAD].irreversible and "raises NotImplementedError" in str(
        by_rev[HEAD].irreversible_reason
    )
    assert by_rev[HEAD].is_head
    assert not any(p.irreversible for p in st.pending if p.revision != HEAD)
    assert by_rev["f70b15c6da06"].date == "2026-10-02 08:30:00"
    assert [a.revision for a in st.applied] == [BASE]
    assert st.applied[0].is_branch_point


async def test_up_to_date_after_upgrade_head(db_url: str) -> None:
    await alembic_to(db_url, DEMO, "heads")
    st = await read(db_url)
    assert st.state == "up_to_date"
    assert st.current == [HEAD]
    assert st.pending == []
    assert [a.revision for a in st.applied][0] == HEAD
    assert sorted(a.revision for a in st.applied) == sorted(ALL)


async def test_unknown_revision_is_ahead_not_an_error(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, BASE)
    conn = await asyncpg.connect(plain_db_url)
    await conn.execute("UPDATE alembic_version SET version_num = 'ffffeeee0000'")
    await conn.close()
    st = await read(db_url)
    assert st.state == "ahead"
    assert st.unknown_current == ["ffffeeee0000"]
    assert "ffffeeee0000" in st.explanation
    assert st.pending == []


async def test_overlapping_version_rows_are_diverged(db_url: str, plain_db_url: str) -> None:
    await alembic_to(db_url, DEMO, "c4d8e1f2a903")
    conn = await asyncpg.connect(plain_db_url)
    await conn.execute(f"INSERT INTO alembic_version VALUES ('{BASE}')")
    await conn.close()
    st = await read(db_url)
    assert st.state == "diverged"
    assert BASE in st.explanation


async def test_empty_version_table_means_everything_pending(db_url: str, plain_db_url: str) -> None:
    conn = await asyncpg.connect(plain_db_url)
    await conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    await conn.close()
    st = await read(db_url)
    assert st.state == "pending"
    assert len(st.pending) == len(ALL)


def add_revision(scripts: Path, rev: str, down: str, body: str = "pass", name: str = "") -> None:
    (scripts / "versions" / f"{rev}_{name or 'extra'}.py").write_text(
        f'"""{name or "extra"} revision\n\nRevision ID: {rev}\nRevises: {down}\n"""\n'
        f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
        f"depends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n"
        f"def downgrade() -> None:\n    {body}\n"
    )


async def test_multiple_heads_are_shown(db_url: str, demo_scripts: Path) -> None:
    add_revision(demo_scripts, "aaaa00000001", HEAD, name="hotfix_a")
    add_revision(demo_scripts, "bbbb00000002", HEAD, name="hotfix_b", body="pass")
    await alembic_to(db_url, demo_scripts, HEAD)
    st = await read(db_url, demo_scripts)
    assert st.multiple_heads
    assert st.heads == ["aaaa00000001", "bbbb00000002"]
    assert st.state == "pending"
    assert sorted(p.revision for p in st.pending) == ["aaaa00000001", "bbbb00000002"]
    assert "2 heads" in st.explanation
    by_rev = {p.revision: p for p in st.pending}
    assert by_rev["bbbb00000002"].irreversible_reason == "downgrade() does nothing"
    await alembic_to(db_url, demo_scripts, "heads")
    st = await read(db_url, demo_scripts)
    assert st.state == "up_to_date"
    assert st.current == ["aaaa00000001", "bbbb00000002"]


async def test_broken_revision_file_is_named_and_the_rest_still_shows(
    db_url: str, demo_scripts: Path
) -> None:
    await alembic_to(db_url, demo_scripts, BASE)
    (demo_scripts / "versions" / "cccc00000003_broken.py").write_text(
        'revision = "cccc00000003"\ndown_revision = "2c3e48f90d09"\nimport no_such_module\n'
    )
    st = await read(db_url, demo_scripts)
    assert [e.file for e in st.script_errors] == ["cccc00000003_broken.py"]
    assert "no_such_module" in st.script_errors[0].error
    assert st.state == "pending"
    assert st.heads == [HEAD]
    assert len(st.pending) == 7


async def test_custom_version_table_name_and_schema(db_url: str, plain_db_url: str) -> None:
    conn = await asyncpg.connect(plain_db_url)
    await conn.execute("CREATE SCHEMA meta")
    await conn.execute("CREATE TABLE meta.schema_rev (version_num varchar(32) PRIMARY KEY)")
    await conn.execute(f"INSERT INTO meta.schema_rev VALUES ('{HEAD}')")
    await conn.close()
    st = await read(db_url, version_table="schema_rev", version_table_schema="meta")
    assert st.state == "up_to_date"
    assert st.version_table == "meta.schema_rev"
    # the default table does not exist in this database
    st = await read(db_url)
    assert st.state == "uninitialized"


async def test_status_reading_writes_nothing(db_url: str, plain_db_url: str) -> None:
    await read(db_url)
    conn = await asyncpg.connect(plain_db_url)
    tables = await conn.fetch(
        "SELECT schemaname, tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    await conn.close()
    assert tables == []


async def test_missing_script_folder_is_reported(db_url: str, tmp_path: Path) -> None:
    st = await read(db_url, tmp_path / "nope")
    assert [(e.file, e.error) for e in st.script_errors] == [
        (str((tmp_path / "nope").resolve()), "script folder does not exist")
    ]
    assert "does not exist" in st.script_errors[0].error


@pytest.mark.parametrize("rev", [BASE, "e6fa04b5c905"])
async def test_applied_history_is_newest_first(db_url: str, rev: str) -> None:
    await alembic_to(db_url, DEMO, rev)
    st = await read(db_url)
    assert st.applied[0].revision == rev
    assert st.applied[-1].revision == BASE
