"""What a plan's steps outside a transaction would leave behind if they failed, pure (no
database): per revision, the statements run outside a transaction, one sentence per object
a failure leaves (named from pglast's nodes), and what of the revision is and is not undone;
and the field in the review's JSON."""

from __future__ import annotations

from dashboard.review.fingerprints import fingerprint
from dashboard.review.model import Capture, CapturedStatement, RevisionCapture
from dashboard.review.nontransactional import leaves_of, non_transactional_steps
from dashboard.review.report import build_review

CIC = "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_orders_customer_created ON orders (customer_id, created_at)"
ENUM = "ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded'"
ADD = "ALTER TABLE orders ADD COLUMN note text"
UPDATE = "UPDATE orders SET note = '' WHERE note IS NULL"


def stmt(rev: str, index: int, sql: str, in_transaction: bool = True) -> CapturedStatement:
    return CapturedStatement(rev, index, sql, fingerprint(sql), in_transaction)


def test_concurrent_index_leaves_an_invalid_index_that_if_not_exists_skips() -> None:
    [line] = leaves_of(CIC)
    assert line.startswith(
        "CREATE INDEX CONCURRENTLY ix_orders_customer_created ON orders: if it fails"
    )
    assert "lock timeout while it waits for old transactions" in line and "a cancel" in line
    assert "duplicate" not in line  # not a UNIQUE index
    assert "INVALID index ix_orders_customer_created" in line
    assert "not used by queries but slows writes" in line
    assert "IF NOT EXISTS will then silently skip it" in line
    assert "DROP INDEX CONCURRENTLY ix_orders_customer_created) and retry" in line


def test_unique_index_without_if_not_exists_names_the_duplicate_and_the_retry_error() -> None:
    # odd spacing, lower case, a quoted mixed-case name and a schema: names come from pglast
    [line] = leaves_of('create  unique index\n concurrently "Ix_Email" on shop.customers(email)')
    assert line.startswith('CREATE UNIQUE INDEX CONCURRENTLY shop."Ix_Email" ON shop.customers')
    assert "a duplicate for UNIQUE" in line
    assert 'fails with "relation Ix_Email already exists"' in line
    assert 'DROP INDEX CONCURRENTLY shop."Ix_Email"' in line


def test_unnamed_concurrent_index_warns_that_a_retry_builds_a_second_one() -> None:
    [line] = leaves_of("CREATE INDEX CONCURRENTLY ON orders (total_cents)")
    assert "ON orders" in line and "name PostgreSQL chose" in line
    assert "second index" in line


def test_enum_value_stays_though_the_revision_is_not_recorded() -> None:
    [line] = leaves_of(ENUM)
    assert line.startswith("ALTER TYPE order_status ADD VALUE 'refunded':")
    assert "new enum value 'refunded' stays in order_status" in line
    assert "not recorded as applied" in line
    assert "IF NOT EXISTS lets a retry skip it" in line
    [plain] = leaves_of("ALTER TYPE public.mood ADD VALUE 'it''s ok' BEFORE 'sad'")
    assert "ALTER TYPE public.mood ADD VALUE 'it''s ok'" in plain
    assert "already exists" in plain and "IF NOT EXISTS" in plain
    [renamed] = leaves_of("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'")
    assert "rename stays" in renamed and "'sad' no longer exists" in renamed


def test_drop_and_reindex_concurrently_and_several_statements_in_one_text() -> None:
    drop, reindex = leaves_of(
        "DROP INDEX CONCURRENTLY IF EXISTS shop.ix_old; REINDEX INDEX CONCURRENTLY ix_email"
    )
    assert drop.startswith("DROP INDEX CONCURRENTLY shop.ix_old:") and "INVALID" in drop
    assert "run DROP INDEX CONCURRENTLY IF EXISTS shop.ix_old again" in drop
    assert reindex.startswith("REINDEX INDEX CONCURRENTLY ix_email:")
    assert "INVALID copy ix_email_ccnew" in reindex and "_ccold" in reindex
    [table] = leaves_of("REINDEX TABLE CONCURRENTLY orders")
    assert table.startswith("REINDEX CONCURRENTLY orders:") and "<index>_ccnew" in table


def test_other_statements_commit_on_their_own_and_unparseable_ones_say_so() -> None:
    [ddl] = leaves_of(ADD)
    assert ddl.startswith(ADD) and "commits on its own" in ddl
    [dml] = leaves_of(UPDATE)
    assert "rows it changed are committed at once" in dml
    [vacuum] = leaves_of("VACUUM orders")
    assert "nothing to undo" in vacuum
    [bad] = leaves_of("FROBNICATE THE orders")
    assert "cannot read it" in bad and "unknown" in bad


def test_only_revisions_with_steps_outside_a_transaction_in_plan_order() -> None:
    plan = [
        stmt("r1", 0, ADD),
        stmt("r2", 1, ENUM, in_transaction=False),
        stmt("r3", 2, CIC, in_transaction=False),
        stmt("r4", 3, UPDATE),
    ]
    steps = non_transactional_steps(plan)
    assert [s.revision for s in steps] == ["r2", "r3"]
    enum, cic = steps
    assert [(s.index, s.sql) for s in enum.statements] == [(1, ENUM)]
    assert len(enum.leaves) == 1 and "stays in order_status" in enum.leaves[0]
    assert "INVALID index" in cic.leaves[0]
    # a revision that is only its block: nothing of its own was committed before it
    assert enum.committed_before == () and enum.rolled_back_after == ()
    assert "commits on its own" in enum.note
    assert "still names the revision before r2: r2 is not recorded as applied" in enum.note
    assert "INVALID index left behind" not in enum.note  # an enum leaves no index
    assert "INVALID index left behind must be dropped first" in cic.note
    assert non_transactional_steps([stmt("r1", 0, ADD), stmt("r1", 1, UPDATE)]) == ()


def test_what_is_committed_before_the_block_and_rolled_back_after_it() -> None:
    plan = [
        stmt("r1", 0, ADD),
        stmt("r1", 1, UPDATE),
        stmt("r1", 2, CIC, in_transaction=False),
        stmt("r1", 3, ENUM, in_transaction=False),
        stmt("r1", 4, "ALTER TABLE orders DROP COLUMN note"),
    ]
    [step] = non_transactional_steps(plan)
    assert [s.index for s in step.statements] == [2, 3]
    assert len(step.leaves) == 2
    assert step.committed_before == (0, 1) and step.rolled_back_after == (4,)
    note = step.note
    assert "Statements #1 and #2 of this revision run in its transaction before the" in note
    assert "Alembic commits that transaction when the block starts" in note
    assert "they stay applied" in note
    assert "The 2 statements outside a transaction each commit on their own" in note
    assert "Statement #5 after the block runs in a new transaction, rolled back" in note
    assert "version table is only updated at the end of the revision" in note
    # order in the note: committed first, the block, then what is rolled back, then the table
    assert note.index("#1 and #2") < note.index("outside a transaction") < note.index("#5")
    assert note.index("#5") < note.index("version table")


def test_statements_between_two_blocks_are_committed_when_the_next_block_starts() -> None:
    plan = [
        stmt("r1", 0, CIC, in_transaction=False),
        stmt("r1", 1, ADD),
        stmt("r1", 2, ENUM, in_transaction=False),
    ]
    [step] = non_transactional_steps(plan)
    assert step.committed_before == (1,) and step.rolled_back_after == ()
    assert "Statement #2 between the blocks runs in a transaction of its own" in step.note


def test_downgrade_wording_says_the_downgrade_is_not_recorded() -> None:
    [step] = non_transactional_steps(
        [stmt("r9", 0, "DROP INDEX CONCURRENTLY ix", in_transaction=False)],
        direction="downgrade",
    )
    assert "still names r9: the downgrade is not recorded" in step.note
    [enum] = non_transactional_steps([stmt("r9", 0, ENUM, False)], direction="downgrade")
    assert "the downgrade is not recorded" in enum.leaves[0]


def _review(*revisions: RevisionCapture) -> dict[str, object]:
    review = build_review(
        direction="upgrade",
        target="heads",
        from_heads=("r0",),
        to_heads=(revisions[-1].revision,),
        capture=Capture(exact=True, source="rehearsal", revisions=revisions),
        sql_sha256="s" * 64,
        messages={},
        waivers={},
    )
    return review.to_json()


def test_review_json_lists_the_non_transactional_steps() -> None:
    body = _review(
        RevisionCapture("r1", (stmt("r1", 0, ADD),)),
        RevisionCapture("r2", (stmt("r2", 1, ENUM, False),)),
        RevisionCapture("r3", (stmt("r3", 2, CIC, False),)),
    )
    steps = body["non_transactional"]
    assert isinstance(steps, list)
    assert [s["revision"] for s in steps] == ["r2", "r3"]
    for s in steps:
        assert {"revision", "statements", "leaves", "note"} <= s.keys()
        assert all(set(x) == {"index", "sql"} for x in s["statements"])
        assert s["leaves"] and all(isinstance(x, str) for x in s["leaves"])
        assert isinstance(s["note"], str) and s["note"]
    assert steps[1]["statements"] == [{"index": 2, "sql": CIC}]
    plain = _review(RevisionCapture("r1", (stmt("r1", 0, ADD),)))
    assert plain["non_transactional"] == []
