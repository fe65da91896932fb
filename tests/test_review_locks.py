"""Static lock analysis (dashboard.review.locks): pure, no database.

What PostgreSQL itself does for these forms is checked in test_review_locks_pg.py."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.review import locks as locks_module
from dashboard.review import model
from dashboard.review.lock_table import CONFLICTS, conflicts, strongest
from dashboard.review.locks import analyze, analyze_blocks
from dashboard.review.model import LOCK_MODES, UNKNOWN, RelationLock, StatementFacts

AS, RS, RE, SUE = (
    model.ACCESS_SHARE,
    model.ROW_SHARE,
    model.ROW_EXCLUSIVE,
    model.SHARE_UPDATE_EXCLUSIVE,
)
SH, SRE, EX, AE = model.SHARE, model.SHARE_ROW_EXCLUSIVE, model.EXCLUSIVE, model.ACCESS_EXCLUSIVE


def one(sql: str) -> StatementFacts:
    (facts,) = analyze(sql)
    return facts


def locks(sql: str) -> dict[str, str]:
    return {lock.relation: lock.mode for lock in one(sql).locks}


# (sql, locks, rewrite, scan, transactional)
FORMS: list[tuple[str, dict[str, str], bool, bool, bool]] = [
    # CREATE TABLE: the new table (nobody else can hold it), referenced and parent tables
    ("CREATE TABLE t (id int PRIMARY KEY)", {"t": AE}, False, False, True),
    ("CREATE TABLE t (p int REFERENCES parent (id))", {"t": AE, "parent": SRE}, False, False, True),
    (
        "CREATE TABLE t (p int, FOREIGN KEY (p) REFERENCES s.parent (id))",
        {"t": AE, "s.parent": SRE},
        False,
        False,
        True,
    ),
    (
        "CREATE TABLE e1 PARTITION OF e FOR VALUES FROM (1) TO (2)",
        {"e1": AE, "e": AE},
        False,
        False,
        True,
    ),
    ("CREATE TABLE h (x int) INHERITS (base)", {"h": AE, "base": SUE}, False, False, True),
    ("CREATE TABLE t2 (LIKE t)", {"t2": AE, "t": AS}, False, False, True),
    ("CREATE TABLE t2 AS SELECT * FROM t", {"t2": AE, "t": AS}, False, False, True),
    # indexes
    ("CREATE INDEX ix ON t (a)", {"t": SH}, False, True, True),
    ("CREATE UNIQUE INDEX ix ON s.t (a)", {"s.t": SH}, False, True, True),
    ("CREATE INDEX CONCURRENTLY ix ON t (a)", {"t": SUE}, False, True, False),
    ("DROP INDEX ix", {"ix": AE}, False, False, True),
    ("DROP INDEX CONCURRENTLY s.ix", {"s.ix": SUE}, False, False, False),
    ("REINDEX TABLE t", {"t": SH}, False, True, True),
    ("REINDEX INDEX ix", {"ix": AE}, True, True, True),
    ("REINDEX INDEX CONCURRENTLY ix", {"ix": SUE}, True, True, False),
    ("REINDEX (CONCURRENTLY) TABLE t", {"t": SUE}, False, True, False),
    ("REINDEX SCHEMA public", {"?": SH}, False, True, False),
    # DROP
    ("DROP TABLE t", {"t": AE}, False, False, True),
    ("DROP TABLE IF EXISTS a, s.b CASCADE", {"a": AE, "s.b": AE, "?": AE}, False, False, True),
    ("DROP TYPE mood CASCADE", {"?": AE}, False, False, True),
    ("DROP SCHEMA old CASCADE", {"?": AE}, False, False, True),
    ("DROP VIEW v", {"v": AE}, False, False, True),
    ("DROP MATERIALIZED VIEW mv", {"mv": AE}, False, False, True),
    ("DROP SEQUENCE sq", {"sq": AE}, False, False, True),
    ("DROP TRIGGER tr ON s.t", {"s.t": AE}, False, False, True),
    ("DROP TYPE mood", {}, False, False, True),
    ("DROP FUNCTION f()", {}, False, False, True),
    # ADD COLUMN
    ("ALTER TABLE t ADD COLUMN a text", {"t": AE}, False, False, True),
    ("ALTER TABLE t ADD COLUMN a timestamptz DEFAULT now()", {"t": AE}, False, False, True),
    (
        "ALTER TABLE t ADD COLUMN a timestamptz DEFAULT CURRENT_TIMESTAMP",
        {"t": AE},
        False,
        False,
        True,
    ),
    ("ALTER TABLE t ADD COLUMN a int NOT NULL DEFAULT 0", {"t": AE}, False, False, True),
    ("ALTER TABLE t ADD COLUMN a jsonb DEFAULT '{}'::jsonb", {"t": AE}, False, False, True),
    ("ALTER TABLE t ADD COLUMN a float8 DEFAULT random()", {"t": AE}, True, True, True),
    ("ALTER TABLE t ADD COLUMN a uuid DEFAULT gen_random_uuid()", {"t": AE}, True, True, True),
    (
        "ALTER TABLE t ADD COLUMN a timestamptz DEFAULT clock_timestamp()",
        {"t": AE},
        True,
        True,
        True,
    ),
    ("ALTER TABLE t ADD COLUMN a bigint DEFAULT nextval('sq')", {"t": AE}, True, True, True),
    ("ALTER TABLE t ADD COLUMN a int DEFAULT my_func()", {"t": AE}, True, True, True),
    ("ALTER TABLE t ADD COLUMN a bigserial", {"t": AE}, True, True, True),
    ("ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS IDENTITY", {"t": AE}, True, True, True),
    (
        "ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS (b * 2) STORED",
        {"t": AE},
        True,
        True,
        True,
    ),
    ("ALTER TABLE t ADD COLUMN a int NOT NULL", {"t": AE}, False, True, True),
    ("ALTER TABLE t ADD COLUMN a int UNIQUE", {"t": AE}, False, True, True),
    ("ALTER TABLE t ADD COLUMN a int CHECK (a > 0)", {"t": AE}, False, True, True),
    ("ALTER TABLE t ADD COLUMN a int REFERENCES p (id)", {"t": AE, "p": SRE}, False, False, True),
    (
        "ALTER TABLE t ADD COLUMN a int DEFAULT 1 REFERENCES p (id)",
        {"t": AE, "p": SRE},
        False,
        True,
        True,
    ),
    # ALTER COLUMN
    ("ALTER TABLE t ALTER COLUMN a TYPE bigint", {"t": AE}, True, True, True),
    ("ALTER TABLE t ALTER COLUMN a TYPE int USING a::int", {"t": AE}, True, True, True),
    ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", {"t": AE}, False, True, True),
    ("ALTER TABLE t ALTER COLUMN a DROP NOT NULL", {"t": AE}, False, False, True),
    ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 0", {"t": AE}, False, False, True),
    ("ALTER TABLE t ALTER COLUMN a SET DEFAULT random()", {"t": AE}, False, False, True),
    ("ALTER TABLE t ALTER COLUMN a DROP DEFAULT", {"t": AE}, False, False, True),
    ("ALTER TABLE t ALTER COLUMN a SET STATISTICS 500", {"t": SUE}, False, False, True),
    ("ALTER TABLE t ALTER COLUMN a SET (n_distinct = 10)", {"t": SUE}, False, False, True),
    ("ALTER TABLE t ALTER COLUMN a SET STORAGE EXTERNAL", {"t": AE}, False, False, True),
    (
        "ALTER TABLE t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY",
        {"t": AE},
        False,
        False,
        True,
    ),
    # constraints
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)", {"t": AE}, False, True, True),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID", {"t": AE}, False, False, True),
    (
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES parent (id)",
        {"t": SRE, "parent": SRE},
        False,
        True,
        True,
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES parent (id) NOT VALID",
        {"t": SRE, "parent": SRE},
        False,
        False,
        True,
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES t (id)",
        {"t": SRE},
        False,
        True,
        True,
    ),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (a)", {"t": AE}, False, True, True),
    ("ALTER TABLE t ADD PRIMARY KEY (id)", {"t": AE}, False, True, True),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX ux", {"t": AE}, False, False, True),
    ("ALTER TABLE t ADD CONSTRAINT pk PRIMARY KEY USING INDEX ux", {"t": AE}, False, False, True),
    ("ALTER TABLE t VALIDATE CONSTRAINT c", {"t": SUE}, False, True, True),
    ("ALTER TABLE t DROP CONSTRAINT c", {"t": AE}, False, False, True),
    ("ALTER TABLE t DROP COLUMN a", {"t": AE}, False, False, True),
    # renames, storage parameters, triggers, partitions, misc
    ("ALTER TABLE t RENAME COLUMN a TO b", {"t": AE}, False, False, True),
    ("ALTER TABLE t RENAME TO u", {"t": AE}, False, False, True),
    ("ALTER TABLE t RENAME CONSTRAINT c TO d", {"t": AE}, False, False, True),
    ("ALTER INDEX ix RENAME TO iy", {"ix": SUE}, False, False, True),
    ("ALTER TABLE t SET SCHEMA archive", {"t": AE}, False, False, True),
    ("ALTER TABLE t SET (fillfactor = 70)", {"t": SUE}, False, False, True),
    ("ALTER TABLE t SET (autovacuum_vacuum_scale_factor = 0.01)", {"t": SUE}, False, False, True),
    ("ALTER TABLE t SET (toast.autovacuum_enabled = false)", {"t": SUE}, False, False, True),
    ("ALTER TABLE t SET (user_catalog_table = true)", {"t": AE}, False, False, True),
    ("ALTER TABLE t SET UNLOGGED", {"t": AE}, True, True, True),
    ("ALTER TABLE t SET TABLESPACE fast", {"t": AE}, True, True, True),
    ("ALTER TABLE t CLUSTER ON ix", {"t": SUE}, False, False, True),
    ("ALTER TABLE t ENABLE TRIGGER tr", {"t": SRE}, False, False, True),
    ("ALTER TABLE t DISABLE TRIGGER ALL", {"t": SRE}, False, False, True),
    ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", {"t": AE}, False, False, True),
    ("ALTER TABLE t OWNER TO bob", {"t": AE}, False, False, True),
    ("ALTER TABLE t INHERIT base", {"t": AE, "base": SUE}, False, False, True),
    ("ALTER TABLE t NO INHERIT base", {"t": AE, "base": AS}, False, False, True),
    (
        "ALTER TABLE e ATTACH PARTITION e1 FOR VALUES FROM (1) TO (2)",
        {"e": SUE, "e1": AE},
        False,
        True,
        True,
    ),
    ("ALTER TABLE e DETACH PARTITION e1", {"e": AE, "e1": AE}, False, False, True),
    ("ALTER TABLE e DETACH PARTITION e1 CONCURRENTLY", {"e": SUE, "e1": SUE}, False, False, False),
    ("ALTER INDEX eix ATTACH PARTITION e1ix", {"eix": SUE, "e1ix": AE}, False, False, True),
    ("ALTER TYPE mood ADD VALUE 'meh'", {}, False, False, True),
    ("ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh' AFTER 'ok'", {}, False, False, True),
    # views, sequences, comments, triggers, policies, statistics
    (
        "CREATE VIEW v AS SELECT * FROM t JOIN u USING (id)",
        {"v": AE, "t": AS, "u": AS},
        False,
        False,
        True,
    ),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", {"v": AE}, False, False, True),
    ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", {"mv": AE, "t": AS}, False, False, True),
    ("REFRESH MATERIALIZED VIEW mv", {"mv": AE}, True, False, True),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", {"mv": EX}, False, True, True),
    ("CREATE SEQUENCE sq", {"sq": AE}, False, False, True),
    ("ALTER SEQUENCE sq RESTART WITH 10", {"sq": SRE}, True, False, True),
    ("ALTER SEQUENCE sq OWNED BY t.id", {"sq": SRE}, False, False, True),
    ("COMMENT ON TABLE t IS 'x'", {"t": SUE}, False, False, True),
    ("COMMENT ON COLUMN s.t.a IS 'x'", {"s.t": SUE}, False, False, True),
    ("COMMENT ON CONSTRAINT c ON t IS 'x'", {"t": AS}, False, False, True),
    ("COMMENT ON TRIGGER tr ON s.t IS 'x'", {"s.t": AS}, False, False, True),
    ("COMMENT ON INDEX ix IS 'x'", {"ix": SUE}, False, False, True),
    ("COMMENT ON TYPE mood IS 'x'", {}, False, False, True),
    (
        "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        {"t": SRE},
        False,
        False,
        True,
    ),
    ("CREATE POLICY p ON t USING (true)", {"t": AE}, False, False, True),
    ("CREATE STATISTICS st ON a, b FROM t", {"t": SUE}, False, False, True),
    # maintenance
    ("TRUNCATE t", {"t": AE}, True, False, True),
    ("TRUNCATE TABLE a, b RESTART IDENTITY", {"a": AE, "b": AE}, True, False, True),
    ("CLUSTER t USING ix", {"t": AE}, True, True, True),
    ("CLUSTER", {"?": AE}, True, True, False),
    ("VACUUM FULL t", {"t": AE}, True, True, False),
    ("VACUUM (FULL, ANALYZE) t, u", {"t": AE, "u": AE}, True, True, False),
    ("VACUUM (FULL false) t", {"t": SUE}, False, True, False),
    ("VACUUM t", {"t": SUE}, False, True, False),
    ("VACUUM", {"?": SUE}, False, True, False),
    ("ANALYZE t", {"t": SUE}, False, False, True),
    # explicit locks and data
    ("LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE", {"t": SRE}, False, False, True),
    ("LOCK TABLE a, s.b", {"a": AE, "s.b": AE}, False, False, True),
    ("LOCK t IN ACCESS SHARE MODE", {"t": AS}, False, False, True),
    ("UPDATE t SET a = 1 WHERE id = 2", {"t": RE}, False, False, True),
    ("DELETE FROM t WHERE id IN (SELECT id FROM u)", {"t": RE, "u": AS}, False, False, True),
    ("INSERT INTO t SELECT * FROM u", {"t": RE, "u": AS}, False, False, True),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", {"t": RE}, False, False, True),
    ("SELECT * FROM a JOIN s.b ON true", {"a": AS, "s.b": AS}, False, False, True),
    ("SELECT * FROM a, b x FOR UPDATE OF x", {"a": AS, "b": RS}, False, False, True),
    ("SELECT * FROM t FOR SHARE", {"t": RS}, False, False, True),
    ("WITH c AS (SELECT * FROM a) SELECT * FROM c", {"a": AS}, False, False, True),
    (
        "WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
        {"b": RE, "a": RE},
        False,
        False,
        True,
    ),
    ("SELECT 1", {}, False, False, True),
    ("SET lock_timeout = '3s'", {}, False, False, True),
    ("COPY t FROM STDIN", {"t": RE}, False, False, True),
    ("COPY t TO STDOUT", {"t": AS}, False, False, True),
    # no table lock, or unknowable ones
    ("CREATE TYPE mood AS ENUM ('ok')", {}, False, False, True),
    ("CREATE EXTENSION IF NOT EXISTS pgcrypto", {}, False, False, True),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", {}, False, False, True),
    ("GRANT SELECT ON t TO bob", {}, False, False, True),
    ("DO $$ BEGIN PERFORM 1; END $$", {"?": UNKNOWN}, False, False, True),
    ("CALL p()", {"?": UNKNOWN}, False, False, True),
    ("CREATE DATABASE x", {}, False, False, False),
]


@pytest.mark.parametrize(("sql", "expected", "rewrite", "scan", "transactional"), FORMS)
def test_form(
    sql: str, expected: dict[str, str], rewrite: bool, scan: bool, transactional: bool
) -> None:
    facts = one(sql)
    assert facts.parsed and facts.sql == sql
    assert {lock.relation: lock.mode for lock in facts.locks} == expected
    assert (facts.rewrite, facts.scan, facts.transactional) == (rewrite, scan, transactional)


def test_the_statements_own_table_comes_first() -> None:
    facts = one("ALTER TABLE child ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES parent (id)")
    assert facts.locks[0] == RelationLock("child", SRE)
    assert one("DELETE FROM t USING u WHERE t.id = u.id").locks[0].relation == "t"


def test_several_subcommands_strongest_lock_wins_and_costs_are_ored() -> None:
    facts = one("ALTER TABLE t ALTER COLUMN a SET STATISTICS 100, VALIDATE CONSTRAINT c")
    assert facts.locks == (RelationLock("t", SUE),) and facts.scan and not facts.rewrite
    facts = one(
        "ALTER TABLE t ALTER COLUMN a SET STATISTICS 100, ADD COLUMN b int,"
        " ALTER COLUMN c TYPE bigint, ADD CONSTRAINT fk FOREIGN KEY (d) REFERENCES p (id) NOT VALID"
    )
    assert facts.locks == (RelationLock("t", AE), RelationLock("p", SRE))
    assert facts.rewrite and facts.scan
    facts = one("ALTER TABLE t ADD COLUMN a int, ADD CONSTRAINT c CHECK (b > 0)")
    assert (facts.rewrite, facts.scan) == (False, True)


def test_names_as_postgresql_reads_them() -> None:
    assert locks('ALTER TABLE "Shop"."Orders" ADD COLUMN a int') == {"Shop.Orders": AE}
    assert locks("ALTER TABLE Shop.ORDERS ADD COLUMN a int") == {"shop.orders": AE}
    assert locks('DROP TABLE "MixedCase"') == {"MixedCase": AE}
    assert locks("ALTER TABLE ONLY public.t DROP COLUMN a") == {"public.t": AE}
    assert locks("SELECT * FROM db.s.t") == {"s.t": AS}


def test_kind_node_schema_change_and_creates() -> None:
    facts = one("CREATE INDEX ix ON s.t (a)")
    assert facts.kind == "IndexStmt" and facts.node is not None and facts.node.idxname == "ix"
    assert facts.creates == ("s.ix",) and facts.schema_change
    assert one("CREATE INDEX ON t (a)").creates == ()
    assert one("CREATE TABLE s.t (a int)").creates == ("s.t",)
    assert one("CREATE VIEW v AS SELECT 1").creates == ("v",)
    assert one("CREATE SEQUENCE sq").creates == ("sq",)
    assert one("CREATE MATERIALIZED VIEW mv AS SELECT 1").creates == ("mv",)
    facts = one("SELECT * INTO t2 FROM t")
    assert (
        facts.creates == ("t2",)
        and facts.schema_change
        and locks("SELECT * INTO t2 FROM t")
        == {
            "t2": AE,
            "t": AS,
        }
    )
    for sql in ("SELECT 1", "UPDATE t SET a = 1", "INSERT INTO t VALUES (1)", "DELETE FROM t"):
        assert not one(sql).schema_change, sql
    for sql in ("ALTER TYPE mood ADD VALUE 'x'", "COMMENT ON TABLE t IS 'x'", "DO $$ BEGIN END $$"):
        assert one(sql).schema_change, sql


ALEMBIC = """
BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 8b2e4d6f1a02

CREATE TABLE customers (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY,
    note TEXT DEFAULT 'a; b', -- a semicolon in a string and in a comment;
    PRIMARY KEY (id)
);

/* a block comment; with a semicolon */
INSERT INTO alembic_version (version_num) VALUES ('8b2e4d6f1a02') RETURNING alembic_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade 8b2e4d6f1a02 -> f70b15c6da06

COMMIT;

ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded';

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_c ON customers (note);

BEGIN;

CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;

UPDATE alembic_version SET version_num='f70b15c6da06' WHERE alembic_version.version_num = '8b2e4d6f1a02';

COMMIT;
"""


def test_alembic_offline_text_splits_into_statements() -> None:
    pairs = analyze_blocks(ALEMBIC)
    kinds = [f.kind for f, _ in pairs]
    assert kinds == [
        "CreateStmt",
        "CreateStmt",
        "InsertStmt",
        "AlterEnumStmt",
        "IndexStmt",
        "CreateFunctionStmt",
        "UpdateStmt",
    ]
    assert [in_block for _, in_block in pairs] == [True, True, True, False, False, True, True]
    facts = [f for f, _ in pairs]
    assert facts[1].sql.startswith("CREATE TABLE customers (") and facts[1].sql.endswith(")")
    assert "'a; b'" in facts[1].sql
    assert facts[2].sql.startswith("INSERT INTO alembic_version")
    assert facts[4].transactional is False and facts[4].locks == (RelationLock("customers", SUE),)
    assert facts[5].sql.endswith("END")  # BEGIN ATOMIC ... END stays one statement
    assert [f.kind for f in analyze(ALEMBIC)] == kinds


def test_transaction_blocks_follow_begin_commit_rollback_and_chain() -> None:
    text = (
        "CREATE INDEX a ON t (x); START TRANSACTION; CREATE INDEX b ON t (x);"
        " SAVEPOINT s; CREATE INDEX c ON t (x); ROLLBACK TO SAVEPOINT s;"
        " COMMIT AND CHAIN; CREATE INDEX d ON t (x); ROLLBACK; CREATE INDEX e ON t (x);"
        " BEGIN; CREATE INDEX f ON t (x); END; CREATE INDEX g ON t (x)"
    )
    pairs = analyze_blocks(text)
    assert [(f.node.idxname, in_block) for f, in_block in pairs] == [
        ("a", False),
        ("b", True),
        ("c", True),
        ("d", True),
        ("e", False),
        ("f", True),
        ("g", False),
    ]


def test_a_handler_surprised_by_a_node_reports_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from pglast import ast

    def broken(node: object, fx: object) -> tuple[str, ...]:
        raise AttributeError("unexpected shape")

    monkeypatch.setitem(locks_module._HANDLERS, ast.IndexStmt, broken)
    facts = one("CREATE INDEX ix ON t (a)")
    assert facts.kind == "IndexStmt" and facts.parsed
    assert facts.locks == (RelationLock("?", UNKNOWN),)


def test_non_ascii_text_keeps_statement_boundaries() -> None:
    facts = analyze("COMMENT ON TABLE t IS 'café ☕'; ALTER TABLE t ADD COLUMN ü int;")
    assert [f.sql for f in facts] == [
        "COMMENT ON TABLE t IS 'café ☕'",
        "ALTER TABLE t ADD COLUMN ü int",
    ]


def test_empty_and_comment_only_texts() -> None:
    assert analyze("") == []
    assert analyze("-- nothing\n/* at all */") == []
    assert analyze("BEGIN; COMMIT;") == []


def test_a_statement_that_does_not_parse_is_reported_not_raised() -> None:
    text = "-- first\nBEGIN;\nALTER TABLE t ADD COLUMN a int;\nALTR TABLE t DROP COLUMN b;\nCREATE INDEX ix ON t (a);\nCOMMIT;"
    pairs = analyze_blocks(text)
    assert [f.kind for f, _ in pairs] == ["AlterTableStmt", "unparsed", "IndexStmt"]
    assert all(in_block for _, in_block in pairs)
    bad = pairs[1][0]
    assert bad.sql == "ALTR TABLE t DROP COLUMN b"
    assert bad.locks == (RelationLock("?", UNKNOWN),)
    assert bad.parse_error and "syntax error" in bad.parse_error and not bad.parsed
    assert bad.schema_change and bad.node is None


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 'unterminated",
        "ALTER TABLE",
        "CREATE TABLE t (a int",
        "$$ dollar",
        'SELECT "unterminated',
        "\x00",
        ";;;",
        "ALTER TABLE t ADD COLUMN a int DEFAULT (",
    ],
)
def test_garbage_never_raises(text: str) -> None:
    facts = analyze(text)
    for f in facts:
        assert f.kind == "unparsed" and f.locks == (RelationLock("?", UNKNOWN),)
        assert f.parse_error


def test_conflict_table_is_postgresqls() -> None:
    assert set(CONFLICTS) == set(LOCK_MODES)
    for a, b in itertools.product(LOCK_MODES, repeat=2):
        assert conflicts(a, b) == conflicts(b, a), (a, b)  # symmetric
        assert conflicts(a, b) == (b in CONFLICTS[a])
    assert CONFLICTS[AS] == {AE}
    assert CONFLICTS[RS] == {EX, AE}
    assert CONFLICTS[RE] == {SH, SRE, EX, AE}
    assert CONFLICTS[SUE] == {SUE, SH, SRE, EX, AE}
    assert CONFLICTS[SH] == {RE, SUE, SRE, EX, AE}
    assert CONFLICTS[SRE] == {RE, SUE, SH, SRE, EX, AE}
    assert CONFLICTS[EX] == set(LOCK_MODES) - {AS}
    assert CONFLICTS[AE] == set(LOCK_MODES)
    # a few facts people rely on
    assert not conflicts(SH, SH) and not conflicts(RE, RE) and not conflicts(AS, EX)
    assert conflicts(SH, RE) and conflicts(SUE, SUE) and conflicts(AE, AS)


def test_unknown_conflicts_with_everything() -> None:
    for mode in (*LOCK_MODES, UNKNOWN):
        assert conflicts(UNKNOWN, mode) and conflicts(mode, UNKNOWN)
    assert not conflicts("SIReadLock", AE) and not conflicts(AE, "SIReadLock")


def test_strongest() -> None:
    assert strongest([AS]) == AS
    assert strongest([RE, SH, AS]) == SH
    assert strongest([SRE, SUE, RS]) == SRE
    assert strongest(iter([AE, EX])) == AE
    assert strongest([AE, UNKNOWN, AS]) == UNKNOWN
    assert strongest(reversed(LOCK_MODES)) == AE
    with pytest.raises(ValueError):
        strongest([])
    with pytest.raises(ValueError):
        strongest(["SIReadLock"])


SQL_WORDS = [
    "ALTER",
    "TABLE",
    "t",
    "ADD",
    "COLUMN",
    "a",
    "int",
    "DEFAULT",
    "now()",
    "random()",
    "DROP",
    "CREATE",
    "INDEX",
    "CONCURRENTLY",
    "ON",
    "(",
    ")",
    ",",
    ";",
    "'x'",
    '"Q"',
    "$$",
    "--",
    "/*",
    "*/",
    "BEGIN",
    "COMMIT",
    "SELECT",
    "FROM",
    "LOCK",
    "IN",
    "MODE",
    "CONSTRAINT",
    "FOREIGN",
    "KEY",
    "REFERENCES",
    "NOT",
    "VALID",
    "NULL",
    "TYPE",
    "SET",
    "\n",
    "é",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SQL_WORDS), max_size=30))
def test_analyze_never_raises(words: list[str]) -> None:
    for facts in analyze(" ".join(words)):
        assert facts.locks is not None
        assert (facts.kind == "unparsed") == (facts.parse_error is not None)
        for lock in facts.locks:
            assert lock.mode in (*LOCK_MODES, UNKNOWN)
