"""Statement fingerprints and classes (pure): the key an approval pins for each statement.

`fingerprint(sql)` is pglast's (libpg_query's) fingerprint: literals, parameter numbers,
case and spacing are normalised, so the same statement with other batch values (and the
offline render's literal values against the driver's `$1` parameters) has the same
fingerprint. Text that does not parse gets `sha256:` of its whitespace-normalised text.
"""

from __future__ import annotations

import functools
import hashlib

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.parser import fingerprint as _pg_fingerprint

from dashboard.review.locks import analyze

DATA_NODES = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)
CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})


@functools.lru_cache(maxsize=4096)
def fingerprint(sql: str) -> str:
    """Cached by text: a batched backfill sends the same text (other parameters) many times."""
    try:
        return str(_pg_fingerprint(sql))
    except ParseError:
        text = " ".join(sql.split())
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4096)
def is_data_statement(sql: str) -> bool:
    """SELECT (without INTO), INSERT, UPDATE or DELETE, and nothing else: what a data-dependent
    revision may send without it having been seen ahead. Unparseable text is not data."""
    try:
        raws = parse_sql(sql)
    except ParseError:
        return False
    if not raws:
        return False
    for raw in raws:
        node = raw.stmt
        if not isinstance(node, DATA_NODES):
            return False
        if isinstance(node, ast.SelectStmt) and node.intoClause is not None:
            return False
    return True


def is_catalog(relation: str) -> bool:
    """A system catalog ("pg_catalog.pg_type", "information_schema.tables", "pg_class")."""
    schema, _, table = relation.rpartition(".")
    return schema in CATALOG_SCHEMAS or (not schema and table.startswith("pg_"))


@functools.lru_cache(maxsize=4096)
def reads_application_data(sql: str) -> bool:
    """The statement reads an application table, not only system catalogs. SQLAlchemy's own
    checks (whether an enum type exists, reflection) read the schema, which a rehearsal
    replays exactly: their answers do not make a revision data-dependent."""
    return any(not is_catalog(lock.relation) for facts in analyze(sql) for lock in facts.locks)
