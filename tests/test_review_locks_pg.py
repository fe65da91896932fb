"""The static lock analysis (dashboard.review.locks) checked against PostgreSQL itself.

A fresh database gets a parent/child schema with rows (so scans and rewrites are real).
Each statement then runs in its own transaction, which is rolled back: before it, the
relations the analysis names are resolved to OIDs (so a dropped one can still be found in
pg_locks) and their relfilenode and sequential-scan counters are read; after it, the own
backend's relation locks are read from pg_locks. Compared, per statement:

- the strongest mode PostgreSQL holds on every relation the analysis names equals the
  analysis' mode for it;
- `rewrite` equals "the target's relfilenode changed" (the target is the first relation
  the analysis names);
- `scan` equals "a named table was read sequentially" (pg_stat_xact_all_tables.seq_scan,
  which counts the reads of validation, NOT NULL checks, index builds and rewrites).

Forms that cannot run in a transaction block are only checked for `transactional is
False`, and PostgreSQL must refuse them inside one (SQLSTATE 25001).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import pytest

from dashboard.review.lock_table import strongest
from dashboard.review.locks import analyze
from dashboard.review.model import StatementFacts

SCHEMA = """
CREATE TABLE parent (id int PRIMARY KEY, name text);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 300) g;
CREATE TABLE child (
    id int PRIMARY KEY, parent_id int, n int, qty int, note text, label varchar(20),
    memo text NOT NULL
);
INSERT INTO child SELECT g, 1 + g % 300, g, g, 'x', 'l', 'm' FROM generate_series(1, 3000) g;
CREATE INDEX child_n_ix ON child (n);
CREATE UNIQUE INDEX child_id_n_ux ON child (id, n);
ALTER TABLE child ADD CONSTRAINT child_n_check CHECK (n > 0) NOT VALID;
ALTER TABLE child ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent_id) REFERENCES parent (id)
    NOT VALID;
CREATE VIEW child_v AS SELECT id, n FROM child;
CREATE MATERIALIZED VIEW child_mv AS SELECT parent_id, count(*) AS c FROM child GROUP BY 1;
CREATE TYPE mood AS ENUM ('ok');
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER child_tr BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION noop();
CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO events SELECT g, '2024-06-01' FROM generate_series(1, 100) g;
CREATE TABLE events_2025 (id int, at date);
INSERT INTO events_2025 SELECT g, '2025-03-01' FROM generate_series(1, 100) g;
CREATE TABLE base (id int);
CREATE TABLE heir (id int, x int);
CREATE TABLE heir2 (id int) INHERITS (base);
CREATE SCHEMA archive;
CREATE SEQUENCE child_seq;
CREATE UNIQUE INDEX child_mv_ux ON child_mv (parent_id);
CREATE INDEX events_at_ix ON ONLY events (at);
CREATE INDEX events_2024_at_ix ON events_2024 (at);
CREATE TABLE solo (id int NOT NULL, v int);
INSERT INTO solo SELECT g, g FROM generate_series(1, 100) g;
CREATE UNIQUE INDEX solo_id_ux ON solo (id);
CREATE TABLE empty_t (id int);
CREATE TABLE "Audit" (id int);
INSERT INTO "Audit" VALUES (1);
"""


@dataclass(frozen=True)
class Form:
    sql: str
    # The analysis says "rewrite" where PostgreSQL may skip it: the old column type is not
    # in the statement's text, so a binary-coercible change cannot be told apart.
    rewrite_over_approximated: bool = False
    # PostgreSQL counts sequential scans of the *new* storage while it rebuilds the indexes
    # over it (TRUNCATE: empty; REFRESH: the freshly computed rows). The old rows are not
    # read: not a scan in the analysis' sense.
    rebuild_scans: bool = False


FORMS = [
    # CREATE
    Form("CREATE TABLE t2 (id int PRIMARY KEY, parent_id int REFERENCES parent (id))"),
    Form("CREATE TABLE t3 (LIKE child)"),
    Form(
        "CREATE TABLE events_2026 PARTITION OF events"
        " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
    ),
    Form("CREATE INDEX child_note_ix ON child (note)"),
    Form("CREATE UNIQUE INDEX child_id_ux2 ON child (id)"),
    Form("CREATE VIEW child_v2 AS SELECT c.id FROM child c JOIN parent p ON p.id = c.parent_id"),
    Form("CREATE SEQUENCE s2"),
    Form("CREATE TRIGGER child_tr2 AFTER INSERT ON child FOR EACH ROW EXECUTE FUNCTION noop()"),
    Form("CREATE TABLE child_copy AS SELECT * FROM child"),
    Form("CREATE TABLE heir3 (y int) INHERITS (base)"),
    Form("CREATE TABLE t4 (a int, FOREIGN KEY (a) REFERENCES parent (id))"),
    Form("CREATE MATERIALIZED VIEW child_mv2 AS SELECT * FROM child"),
    Form("CREATE OR REPLACE VIEW child_v AS SELECT id, n, qty FROM child"),
    Form("CREATE STATISTICS child_stats ON n, qty FROM child"),
    Form("CREATE POLICY child_policy ON child USING (n > 0)"),
    # DROP
    Form("DROP INDEX child_n_ix"),
    Form("DROP TABLE child CASCADE"),
    Form("DROP VIEW child_v"),
    Form("DROP TRIGGER child_tr ON child"),
    Form('DROP TABLE "Audit"'),
    # ALTER TABLE ... ADD COLUMN
    Form("ALTER TABLE child ADD COLUMN extra text"),
    Form("ALTER TABLE child ADD COLUMN created timestamptz DEFAULT now()"),
    Form("ALTER TABLE child ADD COLUMN flag boolean NOT NULL DEFAULT false"),
    Form("ALTER TABLE child ADD COLUMN r float8 DEFAULT random()"),
    Form("ALTER TABLE child ADD COLUMN u uuid DEFAULT gen_random_uuid()"),
    Form("ALTER TABLE child ADD COLUMN t timestamptz DEFAULT clock_timestamp()"),
    Form("ALTER TABLE child ADD COLUMN big bigserial"),
    Form("ALTER TABLE child ADD COLUMN ident int GENERATED ALWAYS AS IDENTITY"),
    Form("ALTER TABLE child ADD COLUMN twice int GENERATED ALWAYS AS (n * 2) STORED"),
    Form("ALTER TABLE child ADD COLUMN p2 int REFERENCES parent (id)"),
    Form("ALTER TABLE child ADD COLUMN p3 int DEFAULT 1 REFERENCES parent (id)"),
    Form("ALTER TABLE child ADD COLUMN code int UNIQUE"),
    Form("ALTER TABLE child ADD COLUMN pos int CHECK (pos > 0)"),
    Form("ALTER TABLE empty_t ADD COLUMN nn int NOT NULL"),
    # ALTER TABLE ... ALTER COLUMN
    Form("ALTER TABLE child ALTER COLUMN qty TYPE bigint"),
    Form("ALTER TABLE child ALTER COLUMN label TYPE text", rewrite_over_approximated=True),
    Form("ALTER TABLE child ALTER COLUMN label TYPE varchar(40)", rewrite_over_approximated=True),
    Form("ALTER TABLE child ALTER COLUMN note SET NOT NULL"),
    Form("ALTER TABLE child ALTER COLUMN memo DROP NOT NULL"),
    Form("ALTER TABLE child ALTER COLUMN note SET DEFAULT 'y'"),
    Form("ALTER TABLE child ALTER COLUMN note DROP DEFAULT"),
    Form("ALTER TABLE child ALTER COLUMN n SET STATISTICS 500"),
    # constraints
    Form("ALTER TABLE child ADD CONSTRAINT child_n_pos CHECK (n > 0)"),
    Form("ALTER TABLE child ADD CONSTRAINT child_n_pos CHECK (n > 0) NOT VALID"),
    Form("ALTER TABLE child ADD CONSTRAINT fk2 FOREIGN KEY (parent_id) REFERENCES parent (id)"),
    Form(
        "ALTER TABLE child ADD CONSTRAINT fk2 FOREIGN KEY (parent_id)"
        " REFERENCES parent (id) NOT VALID"
    ),
    Form("ALTER TABLE child ADD CONSTRAINT child_id_n_key UNIQUE (id, n)"),
    Form("ALTER TABLE child ADD CONSTRAINT child_id_n_key UNIQUE USING INDEX child_id_n_ux"),
    Form("ALTER TABLE solo ADD PRIMARY KEY USING INDEX solo_id_ux"),
    Form("ALTER TABLE solo ADD PRIMARY KEY (id)"),
    Form("ALTER TABLE child VALIDATE CONSTRAINT child_n_check"),
    Form("ALTER TABLE child VALIDATE CONSTRAINT child_parent_fk"),
    Form("ALTER TABLE child DROP CONSTRAINT child_n_check"),
    Form("ALTER TABLE child DROP CONSTRAINT child_parent_fk"),
    # other ALTER TABLE forms
    Form("ALTER TABLE child DROP COLUMN note"),
    Form("ALTER TABLE child RENAME COLUMN note TO remark"),
    Form("ALTER TABLE child RENAME TO kid"),
    Form("ALTER TABLE child SET (fillfactor = 70)"),
    Form("ALTER TABLE child DISABLE TRIGGER child_tr"),
    Form("ALTER TABLE child ENABLE TRIGGER ALL"),
    Form("ALTER TABLE child CLUSTER ON child_pkey"),
    Form("ALTER INDEX child_n_ix RENAME TO child_n_idx"),
    Form("ALTER TABLE child ALTER COLUMN note SET STORAGE EXTERNAL"),
    Form("ALTER TABLE child ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"),
    Form("ALTER TABLE child SET UNLOGGED"),
    Form("ALTER TABLE child REPLICA IDENTITY FULL"),
    Form("ALTER TABLE child ENABLE ROW LEVEL SECURITY"),
    Form("ALTER TABLE child OWNER TO postgres"),
    Form("ALTER TABLE child SET SCHEMA archive"),
    Form("ALTER TABLE child SET (autovacuum_vacuum_scale_factor = 0.01)"),
    Form("ALTER TABLE child SET (parallel_workers = 2, user_catalog_table = false)"),
    Form("ALTER TABLE heir INHERIT base"),
    Form("ALTER TABLE heir2 NO INHERIT base"),
    Form("ALTER SEQUENCE child_seq RESTART WITH 10"),
    Form("ALTER SEQUENCE child_seq OWNED BY child.id"),
    Form(
        "ALTER TABLE events ATTACH PARTITION events_2025"
        " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
    ),
    Form("ALTER TABLE events DETACH PARTITION events_2024"),
    Form("ALTER INDEX events_at_ix ATTACH PARTITION events_2024_at_ix"),
    Form(
        "ALTER TABLE child ADD COLUMN a int, ALTER COLUMN qty TYPE bigint,"
        " ALTER COLUMN qty SET STATISTICS 100"
    ),
    Form("ALTER TABLE child ALTER COLUMN n SET STATISTICS 100, VALIDATE CONSTRAINT child_n_check"),
    # types, comments, data, maintenance
    Form("ALTER TYPE mood ADD VALUE 'meh'"),
    Form("COMMENT ON TABLE child IS 'kids'"),
    Form("COMMENT ON COLUMN child.note IS 'a note'"),
    Form("COMMENT ON CONSTRAINT child_n_check ON child IS 'positive'"),
    Form("COMMENT ON TRIGGER child_tr ON child IS 'no-op'"),
    Form("COMMENT ON INDEX child_n_ix IS 'by n'"),
    Form("TRUNCATE child", rebuild_scans=True),
    Form("TRUNCATE parent, child", rebuild_scans=True),
    Form("LOCK TABLE child IN SHARE ROW EXCLUSIVE MODE"),
    Form("LOCK TABLE parent"),
    Form("UPDATE child SET n = n + 1 WHERE id = 1"),
    Form("DELETE FROM child WHERE id = 0"),
    Form("INSERT INTO parent VALUES (1000, 'x')"),
    Form("SELECT count(*) FROM child JOIN parent ON parent.id = child.parent_id"),
    Form("SELECT * FROM parent WHERE id = 1 FOR UPDATE"),
    Form("SELECT * FROM child c JOIN parent p ON p.id = c.parent_id FOR SHARE OF p"),
    Form(
        "WITH d AS (DELETE FROM child WHERE id < 0 RETURNING *) INSERT INTO child SELECT * FROM d"
    ),
    Form("CLUSTER child USING child_pkey"),
    Form("REINDEX TABLE child"),
    Form("REINDEX INDEX child_n_ix"),
    Form("REFRESH MATERIALIZED VIEW child_mv", rebuild_scans=True),
    Form("REFRESH MATERIALIZED VIEW CONCURRENTLY child_mv"),
    Form("ANALYZE child"),
]

NON_TRANSACTIONAL = [
    "CREATE INDEX CONCURRENTLY child_note_ix ON child (note)",
    "DROP INDEX CONCURRENTLY child_n_ix",
    "REINDEX INDEX CONCURRENTLY child_n_ix",
    "REINDEX TABLE CONCURRENTLY child",
    "REINDEX SCHEMA public",
    "VACUUM child",
    "VACUUM FULL child",
    "VACUUM",
    "ALTER TABLE events DETACH PARTITION events_2024 CONCURRENTLY",
]


def _regclass_text(name: str) -> str:
    """The text to_regclass() needs for a name as the analysis writes it (quoted parts)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


async def _oids(conn: asyncpg.Connection, names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        oid = await conn.fetchval("SELECT to_regclass($1)::oid", _regclass_text(name))
        if oid is not None:
            out[name] = oid
    return out


async def _seq_scans(conn: asyncpg.Connection, oids: list[int]) -> int:
    """Sequential scans so far in this transaction of these tables, or of the tables of
    these indexes."""
    total = await conn.fetchval(
        "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_all_tables WHERE relid = ANY($1)"
        " OR relid IN (SELECT indrelid FROM pg_index WHERE indexrelid = ANY($1))",
        oids,
    )
    return int(total)


async def _observe(conn: asyncpg.Connection, form: Form, facts: StatementFacts) -> list[str]:
    """Run the statement in a rolled-back transaction; return what disagrees."""
    named = [lock.relation for lock in facts.locks if lock.relation != "?"]
    problems: list[str] = []
    tr = conn.transaction()
    await tr.start()
    try:
        before = await _oids(conn, named)
        target = before.get(named[0]) if named else None
        filenode = (
            await conn.fetchval("SELECT pg_relation_filenode($1::oid)", target) if target else None
        )
        scans = await _seq_scans(conn, list(before.values()))
        try:
            await conn.execute(facts.sql)
        except asyncpg.PostgresError as exc:
            return [f"PostgreSQL refused it: {exc}"]
        after = {**await _oids(conn, [n for n in named if n not in before]), **before}
        rows = await conn.fetch(
            "SELECT relation, mode, relation::regclass::text AS name FROM pg_locks"
            " WHERE pid = pg_backend_pid() AND locktype = 'relation' AND relation = ANY($1)",
            list(after.values()),
        )
        if not facts.locks:
            user = await conn.fetch(
                "SELECT DISTINCT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'"
                " AND c.relnamespace IN ('public'::regnamespace, 'archive'::regnamespace)"
            )
            if user:
                problems.append(f"analysis names nothing, PostgreSQL locked {sorted(user)}")
        for lock in facts.locks:
            if lock.relation == "?":
                continue
            held = [r["mode"] for r in rows if r["relation"] == after.get(lock.relation)]
            got = strongest(held) if held else None
            if got != lock.mode:
                problems.append(f"{lock.relation}: analysis {lock.mode}, PostgreSQL {got}")
        if target is not None:
            now = await conn.fetchval("SELECT pg_relation_filenode($1::oid)", target)
            changed = now is not None and now != filenode
            lenient = form.rewrite_over_approximated and not changed
            if changed != facts.rewrite and not lenient:
                problems.append(f"rewrite: analysis {facts.rewrite}, filenode changed {changed}")
            # `scan` is about DDL holding its lock over a full read; a query's plan decides
            # for itself whether it reads a whole table.
            scanned = await _seq_scans(conn, list(before.values())) > scans
            if (
                facts.schema_change
                and scanned != facts.scan
                and not (lenient or form.rebuild_scans)
            ):
                problems.append(f"scan: analysis {facts.scan}, sequential scan seen {scanned}")
    finally:
        await tr.rollback()
    return problems


async def test_static_locks_match_postgresql(plain_db_url: str) -> None:
    assert len(FORMS) >= 20
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute(SCHEMA)
        report: list[str] = []
        for form in FORMS:
            (facts,) = analyze(form.sql)
            assert facts.transactional, form.sql
            for problem in await _observe(conn, form, facts):
                report.append(f"{form.sql}\n    {problem}")
        assert not report, "analysis disagrees with PostgreSQL:\n" + "\n".join(report)
    finally:
        await conn.close()


async def test_over_approximated_rewrites_are_really_skipped(plain_db_url: str) -> None:
    """The conservative cases are known: PostgreSQL does not rewrite for them. If it ever
    starts to, the flag above is wrong and should go."""
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute(SCHEMA)
        for form in (f for f in FORMS if f.rewrite_over_approximated):
            (facts,) = analyze(form.sql)
            assert facts.rewrite is True
            tr = conn.transaction()
            await tr.start()
            try:
                before = await conn.fetchval("SELECT pg_relation_filenode('child')")
                await conn.execute(form.sql)
                assert await conn.fetchval("SELECT pg_relation_filenode('child')") == before
            finally:
                await tr.rollback()
    finally:
        await conn.close()


# Locks PostgreSQL takes on a relation the statement's text does not name: the analysis
# cannot see them (it would need the catalog). Kept here so the report stays true.
BLIND_SPOTS = [
    ("DROP TABLE child CASCADE", "parent", "AccessExclusiveLock"),  # child's FK triggers
    ("ALTER TABLE child DROP CONSTRAINT child_parent_fk", "parent", "AccessExclusiveLock"),
    ("ALTER TABLE child VALIDATE CONSTRAINT child_parent_fk", "parent", "RowShareLock"),
    ("DROP INDEX child_n_ix", "child", "AccessExclusiveLock"),  # the index's table
    ("REINDEX INDEX child_n_ix", "child", "ShareLock"),
]


async def test_known_blind_spots(plain_db_url: str) -> None:
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute(SCHEMA)
        for sql, relation, mode in BLIND_SPOTS:
            (facts,) = analyze(sql)
            assert relation not in {lock.relation for lock in facts.locks}, sql
            tr = conn.transaction()
            await tr.start()
            try:
                await conn.execute(sql)
                held = await conn.fetch(
                    "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid()"
                    " AND locktype = 'relation' AND relation = to_regclass($1)",
                    relation,
                )
                assert strongest(r["mode"] for r in held) == mode, sql
            finally:
                await tr.rollback()
    finally:
        await conn.close()


async def test_primary_key_using_index_scans_only_for_nullable_columns(plain_db_url: str) -> None:
    """ADD PRIMARY KEY USING INDEX is reported without a scan (the usual recipe builds the
    index concurrently on NOT NULL columns). On a nullable column PostgreSQL first sets NOT
    NULL, which scans: whether a column is nullable is not in the statement's text."""
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute(
            "CREATE TABLE loose (id int, v int);"
            " INSERT INTO loose SELECT g, g FROM generate_series(1, 100) g;"
            " CREATE UNIQUE INDEX loose_id_ux ON loose (id);"
        )
        sql = "ALTER TABLE loose ADD PRIMARY KEY USING INDEX loose_id_ux"
        (facts,) = analyze(sql)
        assert facts.scan is False
        tr = conn.transaction()
        await tr.start()
        try:
            oid = await conn.fetchval("SELECT 'loose'::regclass::oid")
            before = await _seq_scans(conn, [oid])
            await conn.execute(sql)
            assert await _seq_scans(conn, [oid]) > before
        finally:
            await tr.rollback()
    finally:
        await conn.close()


@pytest.mark.parametrize("sql", NON_TRANSACTIONAL)
def test_non_transactional_forms_are_flagged(sql: str) -> None:
    (facts,) = analyze(sql)
    assert facts.transactional is False


async def test_postgresql_refuses_non_transactional_forms_in_a_block(plain_db_url: str) -> None:
    conn = await asyncpg.connect(plain_db_url)
    try:
        await conn.execute(SCHEMA)
        for sql in NON_TRANSACTIONAL:
            tr = conn.transaction()
            await tr.start()
            try:
                with pytest.raises(asyncpg.PostgresError) as err:
                    await conn.execute(sql)
                assert err.value.sqlstate == "25001", (sql, err.value)
            finally:
                await tr.rollback()
    finally:
        await conn.close()
