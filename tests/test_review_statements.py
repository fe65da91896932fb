"""The statements a plan sends, from Alembic's offline render, per revision; and the static
lock analysis compared with locks a rehearsal observed (pure, no database)."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

from dashboard.migrations.plan import make_plan
from dashboard.review.fingerprints import fingerprint
from dashboard.review.locks import analyze
from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    RelationLock,
    StatementFacts,
)
from dashboard.review.statements import lock_disagreements, offline_capture
from dashboard.targets import Target
from tests.runs_support import add_revision

# A three-revision project: a table with seed rows, a column and two indexes (one built
# CONCURRENTLY in an autocommit block), and a backfill that reads through op.get_bind().
SEED, INDEXES, BACKFILL = "a1a1a1a1a1a1", "b2b2b2b2b2b2", "c3c3c3c3c3c3"


def make_project(root: Path) -> Path:
    scripts = root / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text("raise RuntimeError('the dashboard must not run env.py')\n")
    add_revision(
        scripts,
        SEED,
        None,
        """
        t = op.create_table(
            "customers",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50)),
        )
        op.bulk_insert(t, [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}])
        op.execute(sa.text("UPDATE customers SET name = :n WHERE id = :i").bindparams(n="x", i=1))
        """,
        'op.drop_table("customers")',
    )
    add_revision(
        scripts,
        INDEXES,
        SEED,
        """
        op.add_column("customers", sa.Column("extra", sa.Text))
        op.create_index("ix_customers_name", "customers", ["name"])
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_customers_extra", "customers", ["extra"], postgresql_concurrently=True
            )
        """,
        """
        op.drop_index("ix_customers_name", table_name="customers")
        op.drop_column("customers", "extra")
        """,
    )
    add_revision(
        scripts,
        BACKFILL,
        INDEXES,
        """
        op.add_column("customers", sa.Column("order_count", sa.Integer))
        bind = op.get_bind()
        rows = bind.execute(sa.text("SELECT id FROM customers ORDER BY id"))
        for (i,) in rows:
            bind.execute(sa.text("UPDATE customers SET order_count = 0 WHERE id = :i"), {"i": i})
        """,
        'op.drop_column("customers", "order_count")',
    )
    return scripts


def test_offline_capture_attributes_statements_to_revisions(tmp_path: Path) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, (), "upgrade", "heads")
    cap = offline_capture(sd, plan, Target("main", scripts))
    assert cap.exact is False and cap.source == "offline" and cap.note
    assert [r.revision for r in cap.revisions] == [SEED, INDEXES, BACKFILL]
    seed, indexes, backfill = cap.revisions

    kinds = [analyze(s.sql)[0].kind for s in seed.statements]
    assert kinds == ["CreateStmt", "InsertStmt", "InsertStmt", "UpdateStmt"]
    # the version table is Alembic's bookkeeping, never a revision's statement
    assert not any("alembic_version" in s.sql for s in cap.statements)
    assert [s.index for s in cap.statements] == list(range(len(cap.statements)))
    assert all(s.sql.strip() and not s.sql.rstrip().endswith(";") for s in cap.statements)
    assert seed.source_file is not None and seed.source_file.endswith(f"{SEED}_test.py")
    assert seed.data_dependent is False and seed.data_reason is None

    assert [s.sql.split()[:2] for s in indexes.statements] == [
        ["ALTER", "TABLE"],
        ["CREATE", "INDEX"],
        ["CREATE", "INDEX"],
    ]
    plain, concurrent = indexes.statements[1:]
    assert plain.in_transaction is True
    assert "CONCURRENTLY" in concurrent.sql and concurrent.in_transaction is False
    assert indexes.statements[0].in_transaction is True

    # the backfill reads through op.get_bind(): offline that returns nothing
    assert backfill.data_dependent is True
    assert backfill.data_reason and "reads from the database" in backfill.data_reason
    assert "TypeError" in backfill.data_reason
    assert "ADD COLUMN order_count" in backfill.statements[0].sql
    assert all(s.in_transaction for s in backfill.statements)


def test_offline_capture_from_mid_history(tmp_path: Path) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    plan = make_plan(sd, (SEED,), "upgrade", INDEXES)
    cap = offline_capture(sd, plan, Target("main", scripts))
    assert [r.revision for r in cap.revisions] == [INDEXES]
    assert len(cap.statements) == 3 and cap.statements[0].index == 0


def test_fingerprints_ignore_literals(tmp_path: Path) -> None:
    scripts = make_project(tmp_path)
    sd = ScriptDirectory(str(scripts))
    cap = offline_capture(sd, make_plan(sd, (), "upgrade", SEED), Target("main", scripts))
    first, second = cap.revisions[0].statements[1:3]
    assert "'ann'" in first.sql and "'bob'" in second.sql
    assert first.fingerprint == second.fingerprint == fingerprint(first.sql)
    # the driver's form of the same statement (what a rehearsal records)
    assert first.fingerprint == fingerprint(
        "INSERT INTO customers (id, name) VALUES ($1::INTEGER, $2::VARCHAR)"
    )
    update = cap.revisions[0].statements[3]
    assert update.fingerprint == fingerprint(
        "UPDATE customers SET name = $1::VARCHAR WHERE id = $2::INTEGER"
    )
    assert update.fingerprint != first.fingerprint


# --- lock_disagreements -------------------------------------------------------------------


def facts(sql: str) -> StatementFacts:
    (only,) = analyze(sql)
    return only


def locks(*pairs: tuple[str, str]) -> tuple[RelationLock, ...]:
    return tuple(RelationLock(r, m) for r, m in pairs)


def test_agreement_for_common_forms() -> None:
    # observed: what PostgreSQL 15 granted in a rehearsal (new locks of the statement)
    cases = [
        ("CREATE INDEX ix ON child (n)", locks(("public.child", SHARE))),
        ("ALTER TABLE child ADD COLUMN extra text", locks(("public.child", ACCESS_EXCLUSIVE))),
        (
            "ALTER TABLE child ADD CONSTRAINT fk FOREIGN KEY (parent_id) REFERENCES parent (id)",
            locks(
                ("public.parent", ACCESS_SHARE),
                ("public.parent", ROW_SHARE),
                ("public.parent", SHARE_ROW_EXCLUSIVE),
                ("public.child", ACCESS_SHARE),
                ("public.child", SHARE_ROW_EXCLUSIVE),
            ),
        ),
        (
            "ALTER TABLE child ALTER COLUMN n TYPE bigint",
            locks(("public.child", SHARE), ("public.child", ACCESS_EXCLUSIVE)),
        ),
        (
            "CREATE TABLE grandchild (id int primary key, child_id int REFERENCES child (id))",
            locks(
                ("public.grandchild", ACCESS_SHARE),
                ("public.grandchild", SHARE),
                ("public.grandchild", ACCESS_EXCLUSIVE),
                ("public.child", SHARE_ROW_EXCLUSIVE),
            ),
        ),
        ("DROP TABLE other", locks(("public.other", ACCESS_EXCLUSIVE))),
        ("UPDATE child SET n = n + 1 WHERE id > 5", locks(("public.child", ROW_EXCLUSIVE))),
        # the foreign key check's RowShareLock on the referenced table is not noise-worthy
        (
            "INSERT INTO child (id, parent_id) VALUES (1, 1)",
            locks(("public.child", ROW_EXCLUSIVE), ("public.parent", ROW_SHARE)),
        ),
        # a lock already held by an earlier statement of the transaction is not new
        ("UPDATE child SET n = 1 WHERE id IN (SELECT id FROM parent)", ()),
        ("CREATE INDEX ix ON app.child (n)", locks(("app.child", SHARE))),
    ]
    for sql, observed in cases:
        assert lock_disagreements(facts(sql), observed) == [], sql


def test_disagreements_are_reported() -> None:
    stronger = lock_disagreements(
        facts("CREATE INDEX ix ON child (n)"), locks(("public.child", ACCESS_EXCLUSIVE))
    )
    assert len(stronger) == 1
    assert "public.child" in stronger[0] and ACCESS_EXCLUSIVE in stronger[0]
    assert SHARE in stronger[0]

    weaker = lock_disagreements(
        facts("ALTER TABLE child ADD COLUMN x int"), locks(("public.child", SHARE_UPDATE_EXCLUSIVE))
    )
    assert len(weaker) == 1 and "predicted AccessExclusiveLock" in weaker[0]

    # DROP TABLE of a table with a foreign key also takes its referenced table
    unnamed = lock_disagreements(
        facts("DROP TABLE other"),
        locks(("public.other", ACCESS_EXCLUSIVE), ("public.parent", ACCESS_EXCLUSIVE)),
    )
    assert len(unnamed) == 1 and unnamed[0].startswith("public.parent:")

    # DROP INDEX locks the index's table, which its text does not name: worth saying
    table_of_index = lock_disagreements(
        facts("DROP INDEX ix"), locks(("public.child", ACCESS_EXCLUSIVE))
    )
    assert len(table_of_index) == 1 and table_of_index[0].startswith("public.child:")

    # another schema's table of the same name is another relation
    other_schema = lock_disagreements(
        facts("CREATE INDEX ix ON app.child (n)"),
        locks(("app.child", SHARE), ("public.child", ACCESS_EXCLUSIVE)),
    )
    assert len(other_schema) == 1 and other_schema[0].startswith("public.child:")


def test_unknown_prediction_agrees_with_anything() -> None:
    (unparsed,) = analyze("ALTER TABLE child FROBNICATE")
    assert lock_disagreements(unparsed, locks(("public.child", ACCESS_EXCLUSIVE))) == []
    do_block = facts("DO $$ BEGIN PERFORM 1; END $$")
    assert lock_disagreements(do_block, locks(("public.child", ACCESS_EXCLUSIVE))) == []
