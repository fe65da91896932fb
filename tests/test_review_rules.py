"""Review rules, plan context, waivers and risk levels: pure, no database."""

from __future__ import annotations

from collections.abc import Sequence

import pglast
import pytest
from pglast import ast

from dashboard.review.locks import analyze, analyze_blocks
from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    SEVERITIES,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    UNKNOWN,
    Finding,
    PlanContext,
    RelationLock,
    StatementFacts,
)
from dashboard.review.risk import highest, plan_risk, statement_risk, statement_risks
from dashboard.review.rules import (
    RULES,
    BaseRule,
    ReviewedFinding,
    apply_waivers,
    check_plan,
    check_statement,
    parse_waiver,
    plan_contexts,
    register,
    waivers,
)
from dashboard.review.rules.columns import volatility

DESIGN_RULE_IDS = (
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    "constraint-missing-not-valid",
    "changing-column-type",
    "adding-not-nullable-field",
    "adding-field-with-default",
    "disallowed-unique-constraint",
    "ban-drop-column",
    "ban-drop-table",
    "renaming-column",
    "renaming-table",
    "ban-concurrent-index-creation-in-transaction",
)


def _created(node: ast.Node) -> tuple[str, ...]:
    if isinstance(node, ast.CreateStmt) and node.relation is not None:
        rv = node.relation
        return (f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname),)
    if isinstance(node, ast.IndexStmt) and node.idxname:
        return (node.idxname,)
    return ()


def facts(
    sql: str,
    *locks: tuple[str, str],
    rewrite: bool = False,
    scan: bool = False,
    transactional: bool = True,
    schema_change: bool = True,
) -> StatementFacts:
    """StatementFacts as the analyser would give them: node, kind and creates from pglast,
    the lock/rewrite/scan facts by hand."""
    (raw,) = pglast.parse_sql(sql)
    node = raw.stmt
    assert node is not None
    return StatementFacts(
        sql=sql,
        kind=type(node).__name__,
        locks=tuple(RelationLock(rel, mode) for rel, mode in locks),
        rewrite=rewrite,
        scan=scan,
        transactional=transactional,
        schema_change=schema_change,
        creates=_created(node),
        node=node,
    )


def unparsed(sql: str) -> StatementFacts:
    return StatementFacts(
        sql=sql,
        kind="unparsed",
        locks=(RelationLock("?", UNKNOWN),),
        rewrite=False,
        scan=False,
        transactional=True,
        schema_change=True,
        parse_error="syntax error at or near",
    )


def rules_of(found: Sequence[Finding]) -> list[str]:
    return [f.rule for f in found]


def only(rule: str, stmt: StatementFacts, ctx: PlanContext | None = None) -> list[Finding]:
    return [f for f in check_statement(stmt, ctx) if f.rule == rule]


# --- registry ---------------------------------------------------------------------------


def test_registry_has_every_design_rule() -> None:
    assert set(DESIGN_RULE_IDS) <= set(RULES)
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id
        assert rule.severity in SEVERITIES and rule.severity != "none"
        assert len(rule.reason) > 40 and len(rule.safer) > 40


def test_register_refuses_a_second_rule_with_the_same_id() -> None:
    class Again(BaseRule):
        id = "ban-drop-table"
        severity = "low"

    with pytest.raises(ValueError, match="registered twice"):
        register(Again)


# --- each rule: positive and negative -----------------------------------------------------

POSITIVE = [
    (
        "require-concurrent-index-creation",
        facts("CREATE INDEX ix ON orders (customer_id)"),
        "medium",
    ),
    ("require-concurrent-index-deletion", facts("DROP INDEX ix_orders_customer"), "medium"),
    (
        "constraint-missing-not-valid",
        facts("ALTER TABLE orders ADD CONSTRAINT qty_pos CHECK (qty > 0)", scan=True),
        "high",
    ),
    (
        "constraint-missing-not-valid",
        facts(
            "ALTER TABLE orders ADD CONSTRAINT fk_c FOREIGN KEY (customer_id) REFERENCES customers (id)",
            ("orders", SHARE_ROW_EXCLUSIVE),
            ("customers", SHARE_ROW_EXCLUSIVE),
            scan=True,
        ),
        "medium",
    ),
    (
        "changing-column-type",
        facts("ALTER TABLE orders ALTER COLUMN qty TYPE bigint", rewrite=True),
        "high",
    ),
    (
        "changing-column-type",
        facts("ALTER TABLE orders ALTER COLUMN note TYPE text"),  # analyser: no rewrite
        "medium",
    ),
    (
        "changing-column-type",
        facts("ALTER TABLE orders ALTER COLUMN qty TYPE text USING qty::text"),
        "high",
    ),
    (
        "adding-not-nullable-field",
        facts("ALTER TABLE orders ALTER COLUMN note SET NOT NULL"),
        "high",
    ),
    ("adding-not-nullable-field", facts("ALTER TABLE orders ADD COLUMN n int NOT NULL"), "medium"),
    (
        "adding-not-nullable-field",
        facts("ALTER TABLE orders ADD COLUMN n int DEFAULT NULL NOT NULL"),
        "medium",
    ),
    (
        "adding-field-with-default",
        facts("ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid()"),
        "high",
    ),
    ("adding-field-with-default", facts("ALTER TABLE orders ADD COLUMN seq bigserial"), "high"),
    (
        "adding-field-with-default",
        facts("ALTER TABLE orders ADD COLUMN n int GENERATED ALWAYS AS IDENTITY"),
        "high",
    ),
    (
        "adding-field-with-default",
        facts("ALTER TABLE orders ADD COLUMN q2 int GENERATED ALWAYS AS (qty * 2) STORED"),
        "high",
    ),
    (
        "adding-field-with-default",
        facts("ALTER TABLE orders ADD COLUMN r int DEFAULT my_counter()"),
        "medium",
    ),
    (
        "disallowed-unique-constraint",
        facts("ALTER TABLE orders ADD CONSTRAINT u UNIQUE (ref)"),
        "high",
    ),
    ("disallowed-unique-constraint", facts("ALTER TABLE orders ADD PRIMARY KEY (id)"), "high"),
    (
        "disallowed-unique-constraint",
        facts("ALTER TABLE orders ADD COLUMN ref2 text UNIQUE"),
        "high",
    ),
    ("ban-drop-column", facts("ALTER TABLE orders DROP COLUMN note"), "high"),
    ("ban-drop-table", facts("DROP TABLE IF EXISTS app.orders CASCADE"), "high"),
    ("renaming-column", facts("ALTER TABLE orders RENAME COLUMN note TO remark"), "medium"),
    ("renaming-table", facts("ALTER TABLE orders RENAME TO purchases"), "medium"),
    (
        "ban-concurrent-index-creation-in-transaction",
        facts("CREATE INDEX CONCURRENTLY ix ON orders (ref)", transactional=False),
        "high",
    ),
    (
        "ban-concurrent-index-creation-in-transaction",
        facts("DROP INDEX CONCURRENTLY ix", transactional=False),
        "high",
    ),
    ("unparsed-statement", unparsed("ALTER TABLE orders FROBNICATE"), "medium"),
]

NEGATIVE = [
    ("require-concurrent-index-creation", facts("CREATE INDEX CONCURRENTLY ix ON orders (ref)")),
    ("require-concurrent-index-deletion", facts("DROP INDEX CONCURRENTLY ix_orders_customer")),
    (
        "constraint-missing-not-valid",
        facts("ALTER TABLE orders ADD CONSTRAINT qty_pos CHECK (qty > 0) NOT VALID"),
    ),
    (
        "constraint-missing-not-valid",
        facts(
            "ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id) NOT VALID"
        ),
    ),
    ("constraint-missing-not-valid", facts("ALTER TABLE orders VALIDATE CONSTRAINT qty_pos")),
    ("changing-column-type", facts("ALTER TABLE orders ALTER COLUMN qty SET DEFAULT 0")),
    ("adding-not-nullable-field", facts("ALTER TABLE orders ALTER COLUMN note DROP NOT NULL")),
    (
        "adding-not-nullable-field",
        facts("ALTER TABLE orders ADD COLUMN n int NOT NULL DEFAULT 0"),
    ),
    ("adding-field-with-default", facts("ALTER TABLE orders ADD COLUMN n int DEFAULT 0")),
    (
        "adding-field-with-default",
        facts("ALTER TABLE orders ADD COLUMN at timestamptz NOT NULL DEFAULT now()"),
    ),
    (
        "adding-field-with-default",
        facts("ALTER TABLE orders ADD COLUMN at timestamptz DEFAULT CURRENT_TIMESTAMP"),
    ),
    (
        "adding-field-with-default",
        facts("ALTER TABLE orders ALTER COLUMN token SET DEFAULT gen_random_uuid()"),
    ),
    (
        "disallowed-unique-constraint",
        facts("ALTER TABLE orders ADD CONSTRAINT u UNIQUE USING INDEX ix_ref"),
    ),
    (
        "disallowed-unique-constraint",
        facts("CREATE UNIQUE INDEX CONCURRENTLY ix_ref ON orders (ref)"),
    ),
    ("ban-drop-column", facts("ALTER TABLE orders DROP CONSTRAINT qty_pos")),
    ("ban-drop-table", facts("DROP INDEX CONCURRENTLY ix")),
    ("renaming-column", facts("ALTER TABLE orders RENAME CONSTRAINT a TO b")),
    ("renaming-table", facts("ALTER INDEX ix RENAME TO ix2")),
    (
        "ban-concurrent-index-creation-in-transaction",
        facts("CREATE INDEX ix ON orders (ref)"),
    ),
    ("unparsed-statement", facts("SELECT 1", schema_change=False)),
]


@pytest.mark.parametrize(
    ("rule", "stmt", "severity"), POSITIVE, ids=[f"{r}:{s.sql[:40]}" for r, s, _ in POSITIVE]
)
def test_rule_fires(rule: str, stmt: StatementFacts, severity: str) -> None:
    found = only(rule, stmt)
    assert [f.severity for f in found] == [severity]
    (f,) = found
    assert f.safer == RULES[rule].safer
    assert f.message.endswith(".")
    if rule != "unparsed-statement":  # the others name what they found, not just the rule
        assert f.message != RULES[rule].reason


@pytest.mark.parametrize(("rule", "stmt"), NEGATIVE, ids=[f"{r}:{s.sql[:40]}" for r, s in NEGATIVE])
def test_rule_stays_quiet(rule: str, stmt: StatementFacts) -> None:
    assert only(rule, stmt) == []


def test_every_design_rule_has_a_positive_and_a_negative_case() -> None:
    assert set(DESIGN_RULE_IDS) <= {r for r, _s, _v in POSITIVE}
    assert set(DESIGN_RULE_IDS) <= {r for r, _s in NEGATIVE}


def test_messages_name_the_table_and_column() -> None:
    (f,) = only("ban-drop-column", facts("ALTER TABLE app.orders DROP COLUMN note"))
    assert "app.orders.note" in f.message
    (f,) = only("require-concurrent-index-creation", facts("CREATE INDEX ix ON s.t (a)"))
    assert "ix" in f.message and "s.t" in f.message


def test_one_statement_can_break_several_rules() -> None:
    stmt = facts(
        "ALTER TABLE orders ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid(), "
        "ALTER COLUMN note SET NOT NULL, DROP COLUMN legacy",
        rewrite=True,
    )
    assert sorted(rules_of(check_statement(stmt))) == [
        "adding-field-with-default",
        "adding-not-nullable-field",
        "ban-drop-column",
    ]


@pytest.mark.parametrize(
    ("default", "expected"),
    [
        ("0", ("stable", [])),
        ("'{}'::jsonb", ("stable", [])),
        ("now()", ("stable", [])),
        ("CURRENT_TIMESTAMP", ("stable", [])),
        ("lower('A') || 'b'", ("stable", [])),
        ("random()", ("volatile", ["random"])),
        ("coalesce(pg_catalog.clock_timestamp(), now())", ("volatile", ["clock_timestamp"])),
        ("nextval('s'::regclass)", ("volatile", ["nextval"])),
        ("my_schema.next_code()", ("unknown", ["next_code"])),
    ],
)
def test_default_volatility(default: str, expected: tuple[str, list[str]]) -> None:
    (raw,) = pglast.parse_sql(f"SELECT {default}")
    assert isinstance(raw.stmt, ast.SelectStmt)
    (target,) = raw.stmt.targetList or ()
    assert volatility(target.val) == expected


# --- plan context ---------------------------------------------------------------------------


def test_index_on_a_table_created_earlier_in_the_plan_is_fine() -> None:
    plan = [
        facts("CREATE TABLE app.invoices (id bigint PRIMARY KEY, ref text)"),
        facts("CREATE INDEX ix_invoices_ref ON invoices (ref)", ("invoices", SHARE)),
        facts("ALTER TABLE app.invoices ADD COLUMN token uuid DEFAULT gen_random_uuid()"),
        facts("ALTER TABLE app.invoices ADD CONSTRAINT u UNIQUE (ref)"),
        facts("DROP INDEX ix_invoices_ref"),
        facts("CREATE INDEX ix_orders_ref ON orders (ref)", ("orders", SHARE)),
    ]
    found = check_plan(plan)
    assert [rules_of(f) for f in found] == [
        [],
        [],
        [],
        [],
        [],
        ["require-concurrent-index-creation"],
    ]
    contexts = plan_contexts(plan)
    assert contexts[0].new_relations == frozenset()
    assert contexts[1].new_relations == {"app.invoices"}
    assert contexts[5].new_relations == {"app.invoices", "ix_invoices_ref"}


def test_a_new_table_stays_new_after_a_rename() -> None:
    plan = [
        facts("CREATE TABLE tmp_orders (id int)"),
        facts("ALTER TABLE tmp_orders RENAME TO orders_v2"),
        facts("ALTER TABLE orders_v2 RENAME COLUMN id TO order_id"),
        facts("CREATE INDEX ix ON orders_v2 (order_id)"),
    ]
    assert [rules_of(f) for f in check_plan(plan)] == [[], [], [], []]


def test_same_name_in_another_schema_is_not_new() -> None:
    plan = [
        facts("CREATE TABLE audit.orders (id int)"),
        facts("CREATE INDEX ix ON app.orders (id)"),
    ]
    assert rules_of(check_plan(plan)[1]) == ["require-concurrent-index-creation"]


def test_concurrently_inside_the_revision_transaction_is_flagged() -> None:
    plan = [
        facts("BEGIN", schema_change=False),
        facts("CREATE INDEX CONCURRENTLY ix ON orders (ref)", transactional=False),
        facts("COMMIT", schema_change=False),
    ]
    assert rules_of(check_plan(plan)[1]) == ["ban-concurrent-index-creation-in-transaction"]


def test_concurrently_in_an_autocommit_block_is_fine() -> None:
    # Alembic's offline SQL for autocommit_block(): COMMIT; <statement>; BEGIN;
    plan = [
        facts("BEGIN", schema_change=False),
        facts("COMMIT", schema_change=False),
        facts("CREATE INDEX CONCURRENTLY ix ON orders (ref)", transactional=False),
        facts("BEGIN", schema_change=False),
        facts("CREATE INDEX CONCURRENTLY ix2 ON orders (note)", transactional=False),
    ]
    found = check_plan(plan)
    assert [rules_of(f) for f in found] == [
        [],
        [],
        [],
        [],
        ["ban-concurrent-index-creation-in-transaction"],
    ]
    assert [c.in_transaction for c in plan_contexts(plan)] == [True, True, False, False, True]
    stmt = facts("CREATE INDEX CONCURRENTLY ix ON orders (ref)", transactional=False)
    assert check_plan([stmt], in_transaction=False) == [[]]


# --- with the analyser's facts (locks.analyze) ---------------------------------------------


@pytest.mark.parametrize(
    ("rule", "stmt", "fires"),
    [(r, s, True) for r, s, _v in POSITIVE] + [(r, s, False) for r, s in NEGATIVE],
    ids=[f"+{r}:{s.sql[:30]}" for r, s, _ in POSITIVE]
    + [f"-{r}:{s.sql[:30]}" for r, s in NEGATIVE],
)
def test_rules_agree_on_analyzed_facts(rule: str, stmt: StatementFacts, fires: bool) -> None:
    """The hand-built cases give the same verdicts on the analyser's own facts (inside a
    transaction, as a revision's statements run by default)."""
    (analyzed,) = analyze(stmt.sql)
    assert analyzed.kind == stmt.kind
    assert bool(only(rule, analyzed)) is fires


OFFLINE_SQL = """
BEGIN;
-- Running upgrade  -> 0001
CREATE TABLE app.invoices (id bigint PRIMARY KEY, ref text);
CREATE INDEX ix_invoices_ref ON app.invoices (ref);
ALTER TABLE app.invoices ADD COLUMN token uuid DEFAULT gen_random_uuid();
UPDATE alembic_version SET version_num='0001';
COMMIT;
BEGIN;
-- Running upgrade 0001 -> 0002
ALTER TABLE orders ALTER COLUMN qty TYPE bigint;
ALTER TABLE orders ADD COLUMN note2 text;
CREATE INDEX CONCURRENTLY ix_orders_bad ON orders (note2);
COMMIT;
CREATE INDEX CONCURRENTLY ix_orders_ref ON orders (ref);
BEGIN;
DROP TABLE legacy;
UPDATE alembic_version SET version_num='0002';
COMMIT;
"""


def test_plan_of_an_offline_render() -> None:
    blocks = analyze_blocks(OFFLINE_SQL)
    statements = [f for f, _ in blocks]
    flags = [b for _, b in blocks]
    found = check_plan(statements, in_transaction=flags)
    assert [rules_of(f) for f in found] == [
        [],
        [],
        [],
        [],
        ["changing-column-type"],
        [],
        ["ban-concurrent-index-creation-in-transaction"],
        [],
        ["ban-drop-table"],
        [],
    ]
    assert statement_risks(statements, found, in_transaction=flags) == [
        "none",
        "none",
        "none",
        "none",
        "high",
        "low",
        "high",
        "none",
        "high",
        "none",
    ]
    assert plan_risk(statements, in_transaction=flags) == "high"
    with pytest.raises(ValueError, match="in_transaction flags"):
        check_plan(statements, in_transaction=flags[:-1])


def test_risk_of_analyzed_statements() -> None:
    def risk(sql: str) -> str:
        (stmt,) = analyze(sql)
        return statement_risk(stmt, check_statement(stmt))

    assert risk("SELECT * FROM orders") == "none"
    assert risk("ALTER TABLE orders ADD COLUMN n int") == "low"
    assert risk("CREATE INDEX ix ON orders (ref)") == "medium"
    assert risk("ALTER TABLE orders ALTER COLUMN note SET NOT NULL") == "high"
    assert risk("ALTER TABLE orders ADD COLUMN t uuid DEFAULT gen_random_uuid()") == "high"
    assert risk("ALTER TABLE orders FROBNICATE") == "medium"
    assert risk("DO $$ BEGIN PERFORM 1; END $$") == "medium"


# --- waivers -----------------------------------------------------------------------------------

REVISION = '''"""drop the legacy column

Revision ID: 0007
"""
from alembic import op

# dashboard: allow ban-drop-column -- the column was unused since 2024
#dashboard: allow renaming-column, renaming-table --  clients use the view,  not the table
# dashboard: allow ban-drop-table
# dashboard: deny ban-drop-table -- not a verb we know
# dashboard: allow ban-drop-column -- and it was backed up on 2025-01-02


def upgrade() -> None:
    op.execute("ALTER TABLE t DROP COLUMN c -- dashboard: allow changing-column-type -- x")
    op.drop_column("orders", "legacy")  # dashboard: allow adding-field-with-default -- inline
'''


def test_waivers_are_read_from_comments_only() -> None:
    assert waivers(REVISION) == {
        "ban-drop-column": "the column was unused since 2024; and it was backed up on 2025-01-02",
        "renaming-column": "clients use the view, not the table",
        "renaming-table": "clients use the view, not the table",
        "adding-field-with-default": "inline",
    }


def test_waiver_parsing_edge_cases() -> None:
    assert parse_waiver("# Dashboard: ALLOW ban-drop-table -- archived") == {
        "ban-drop-table": "archived"
    }
    assert parse_waiver("# dashboard: allow ban-drop-table --   ") == {}
    assert parse_waiver("# todo: allow ban-drop-table -- x") == {}
    assert waivers("def f(:\n    # dashboard: allow ban-drop-table -- x\n") == {
        "ban-drop-table": "x"
    }
    assert waivers('x = """never closed\n# dashboard: allow ban-drop-table -- x\n') == {}


def test_apply_waivers_keeps_and_marks_waived_findings() -> None:
    found = check_statement(
        facts("ALTER TABLE orders DROP COLUMN legacy, ALTER COLUMN note SET NOT NULL", scan=True)
    )
    reviewed = apply_waivers(found, waivers(REVISION))
    assert [(r.rule, r.is_waived) for r in reviewed] == [
        ("adding-not-nullable-field", False),
        ("ban-drop-column", True),
    ]
    dropped = reviewed[1]
    assert isinstance(dropped, ReviewedFinding)
    assert dropped.severity == "high" and dropped.effective_severity == "none"
    assert dropped.to_json()["waived"] is True
    assert str(dropped.to_json()["waiver_reason"]).startswith("the column was unused")
    assert reviewed[0].to_json()["waiver_reason"] is None


# --- risk -----------------------------------------------------------------------------------------


def risk_of(stmt: StatementFacts, ctx: PlanContext | None = None) -> str:
    return statement_risk(stmt, check_statement(stmt, ctx), ctx)


def test_risk_levels() -> None:
    # a plain read: nothing
    assert risk_of(facts("SELECT 1", schema_change=False)) == "none"
    # AccessExclusiveLock, no rewrite, no scan: brief but queues
    assert (
        risk_of(facts("ALTER TABLE orders ADD COLUMN n int", ("orders", ACCESS_EXCLUSIVE))) == "low"
    )
    # ShareLock index build: the rule's medium
    assert (
        risk_of(facts("CREATE INDEX ix ON orders (ref)", ("orders", SHARE), scan=True)) == "medium"
    )
    # unparsed: treated as AccessExclusiveLock of unknown length
    assert risk_of(unparsed("ALTER TABLE orders FROBNICATE")) == "medium"
    # rewrite of an existing table under AccessExclusiveLock
    rewrite = facts(
        "ALTER TABLE orders ALTER COLUMN qty TYPE bigint",
        ("orders", ACCESS_EXCLUSIVE),
        rewrite=True,
    )
    assert risk_of(rewrite) == "high"
    # the same on a table created earlier in the plan: nobody is using it yet
    ctx = PlanContext(new_relations=frozenset({"orders"}))
    assert risk_of(rewrite, ctx) == "none"


def test_risk_floor_does_not_depend_on_rules() -> None:
    # no rule covers VACUUM FULL; the facts alone make it high
    stmt = facts("VACUUM FULL orders", ("orders", ACCESS_EXCLUSIVE), rewrite=True)
    assert check_statement(stmt) == []
    assert statement_risk(stmt) == "high"
    # a parsed statement whose lock could not be told is at least medium ...
    odd = facts("ALTER TABLE orders SET ACCESS METHOD heap2", ("orders", UNKNOWN))
    assert statement_risk(odd, []) == "medium"
    # ... and high when it also rewrites an existing table
    odd_rewrite = facts(
        "ALTER TABLE orders SET ACCESS METHOD heap2", ("orders", UNKNOWN), rewrite=True
    )
    assert statement_risk(odd_rewrite, []) == "high"


def test_waived_findings_do_not_count_but_the_lock_floor_stays() -> None:
    drop = facts("ALTER TABLE orders DROP COLUMN legacy", ("orders", ACCESS_EXCLUSIVE))
    reviewed = apply_waivers(check_statement(drop), {"ban-drop-column": "unused"})
    assert statement_risk(drop, check_statement(drop)) == "high"
    assert statement_risk(drop, reviewed) == "low"
    retype = facts(
        "ALTER TABLE orders ALTER COLUMN qty TYPE bigint",
        ("orders", ACCESS_EXCLUSIVE),
        rewrite=True,
    )
    waived = apply_waivers(check_statement(retype), {"changing-column-type": "tiny table"})
    assert statement_risk(retype, waived) == "high"


def test_plan_risk_is_the_highest_statement_risk() -> None:
    plan = [
        facts("CREATE TABLE invoices (id int)", ("invoices", ACCESS_EXCLUSIVE)),
        facts(
            "ALTER TABLE invoices ALTER COLUMN id TYPE bigint",
            ("invoices", ACCESS_EXCLUSIVE),
            rewrite=True,
        ),
        facts("CREATE INDEX ix ON orders (ref)", ("orders", SHARE), scan=True),
    ]
    assert statement_risks(plan) == ["none", "none", "medium"]
    assert plan_risk(plan) == "medium"
    assert plan_risk(plan[:2]) == "none"
    assert plan_risk([]) == "none"
    plan.append(
        facts(
            "ALTER TABLE orders ALTER COLUMN note SET NOT NULL",
            ("orders", ACCESS_EXCLUSIVE),
            scan=True,
        )
    )
    assert plan_risk(plan) == "high"
    with pytest.raises(ValueError, match="findings for"):
        plan_risk(plan, [[]])


def test_highest() -> None:
    assert highest([]) == "none"
    assert highest(["low", "high", "medium"]) == "high"
    assert highest(["low", "bogus"]) == "low"
