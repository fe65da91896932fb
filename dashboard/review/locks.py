"""Statement -> relations, lock modes, rewrite/scan, transactional: static analysis with pglast.

Pure: no I/O, no regular expressions. `analyze(sql)` splits a text (Alembic's offline
render: many statements, comments, BEGIN;/COMMIT;) with PostgreSQL's own parser
(libpg_query) and describes each statement as a `StatementFacts`. Transaction control
(BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...) is not reported as a statement;
`analyze_blocks()` says which statements sit inside an explicit BEGIN ... COMMIT.

Relation names are kept as written ("schema.table" when qualified); the parser folds
unquoted identifiers to lower case and keeps quoted ones. A relation named "?" stands for
tables the statement locks that cannot be known from its text (a DO block, VACUUM with no
table list, a statement pglast cannot parse). Lock levels are PostgreSQL 15's; the ALTER
TABLE subcommands are in `alter_table.py`, the conflict table in `lock_table.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import DropBehavior
from pglast.enums import ObjectType as OT
from pglast.enums import TransactionStmtKind as TK
from pglast.parser import ParseError, scan

from dashboard.review.alter_table import (
    cluster,
    create_table,
    refresh_matview,
    reindex,
    subcommand,
    truncate,
    vacuum,
)
from dashboard.review.lock_table import (
    CONFLICTS,
    DATA_STATEMENTS,
    LOCKLESS_STATEMENTS,
    NON_TRANSACTIONAL_STATEMENTS,
    UNKNOWN_RELATION,
    Effects,
    conflicts,
    dotted,
    mode_from_number,
    nodes,
    rel_name,
    strongest,
)
from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    UNKNOWN,
    RelationLock,
    StatementFacts,
)

__all__ = ["CONFLICTS", "analyze", "analyze_blocks", "conflicts", "facts_of", "strongest"]

_RELATION_OBJECTS = frozenset(
    {OT.OBJECT_TABLE, OT.OBJECT_VIEW, OT.OBJECT_MATVIEW, OT.OBJECT_SEQUENCE}
    | {OT.OBJECT_FOREIGN_TABLE, OT.OBJECT_INDEX}
)
_ON_TABLE_OBJECTS = frozenset(
    {OT.OBJECT_TRIGGER, OT.OBJECT_RULE, OT.OBJECT_POLICY, OT.OBJECT_TABCONSTRAINT}
)


# --- one handler per statement type: fill `fx`, return the relations created -------------


def _reads(node: Any, fx: Effects, skip: Iterable[int] = ()) -> None:
    """Tables a query reads (AccessShareLock), writes (RowExclusiveLock, a DML target, also
    inside a CTE) or locks with FOR UPDATE/SHARE (RowShareLock). CTE names are not tables."""
    every = list(nodes(node))
    ctes = {n.ctename for n in every if isinstance(n, ast.CommonTableExpr)}
    skip = set(skip)
    modes: dict[int, str] = {}
    for n in every:
        if isinstance(n, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
            modes[id(n.relation)] = ROW_EXCLUSIVE
        elif isinstance(n, ast.SelectStmt) and n.lockingClause:
            named = [rv for lc in n.lockingClause for rv in lc.lockedRels or ()]
            skip |= {id(rv) for rv in named}  # FOR UPDATE OF x: x names a FROM item
            locked = {rv.relname for rv in named}
            for rv in nodes(n.fromClause or ()):
                if isinstance(rv, ast.RangeVar) and (
                    not locked
                    or rv.relname in locked
                    or (rv.alias and rv.alias.aliasname in locked)
                ):
                    modes.setdefault(id(rv), ROW_SHARE)
    seen: list[Any] = [n for n in every if isinstance(n, ast.RangeVar)]
    seen.sort(key=lambda rv: rv.location if rv.location is not None else 0)
    for rv in seen:
        if id(rv) in skip or (not rv.schemaname and rv.relname in ctes):
            continue
        fx.lock(rel_name(rv), modes.get(id(rv), ACCESS_SHARE))


def _dml(node: Any, fx: Effects) -> tuple[str, ...]:
    fx.lock(rel_name(node.relation), ROW_EXCLUSIVE)
    _reads(node, fx)
    return ()


def _select(node: Any, fx: Effects) -> tuple[str, ...]:
    creates: tuple[str, ...] = ()
    if node.intoClause is not None:  # SELECT ... INTO new_table
        creates = (rel_name(node.intoClause.rel),)
        fx.lock(creates[0], ACCESS_EXCLUSIVE)
    _reads(node, fx, [id(node.intoClause.rel)] if creates else ())
    return creates


def _create_as(node: Any, fx: Effects) -> tuple[str, ...]:
    name = rel_name(node.into.rel)
    fx.lock(name, ACCESS_EXCLUSIVE)
    _reads(node.query, fx)
    return (name,)


def _view(node: Any, fx: Effects) -> tuple[str, ...]:
    name = rel_name(node.view)
    fx.lock(name, ACCESS_EXCLUSIVE)  # a replaced view is locked; a new one is ours alone
    _reads(node.query, fx)
    return (name,)


def _index(node: Any, fx: Effects) -> tuple[str, ...]:
    """CREATE INDEX: ShareLock (blocks writes); CONCURRENTLY: ShareUpdateExclusiveLock and
    never inside a transaction block. Either way the table is read in full."""
    fx.lock(rel_name(node.relation), SHARE_UPDATE_EXCLUSIVE if node.concurrent else SHARE)
    fx.scan = True
    fx.transactional = not node.concurrent
    if not node.idxname:
        return ()
    schema = node.relation.schemaname
    return (f"{schema}.{node.idxname}" if schema else node.idxname,)


def _drop(node: Any, fx: Effects) -> tuple[str, ...]:
    """DROP TABLE / VIEW / SEQUENCE / INDEX: AccessExclusiveLock on the object (for an index
    PostgreSQL also locks its table, which the text does not name); DROP INDEX CONCURRENTLY:
    ShareUpdateExclusiveLock, outside a transaction block. DROP TRIGGER / RULE / POLICY:
    AccessExclusiveLock on their table. Other objects (types, functions): no table lock.
    CASCADE also drops what depends on the object (views, columns of a dropped type, ...):
    AccessExclusiveLock on relations the text does not name ("?")."""
    kind = node.removeType
    if kind in _RELATION_OBJECTS:
        mode = ACCESS_EXCLUSIVE
        if kind == OT.OBJECT_INDEX and node.concurrent:
            mode = SHARE_UPDATE_EXCLUSIVE
            fx.transactional = False
        for names in node.objects:
            fx.lock(dotted(names), mode)
    elif kind in _ON_TABLE_OBJECTS:
        for names in node.objects:
            fx.lock(dotted(names[:-1]), ACCESS_EXCLUSIVE)
    if node.behavior == DropBehavior.DROP_CASCADE:
        fx.lock(UNKNOWN_RELATION, ACCESS_EXCLUSIVE)  # dependent views, columns, tables
    return ()


def _alter_table(node: Any, fx: Effects) -> tuple[str, ...]:
    table = rel_name(node.relation)
    for cmd in node.cmds:
        subcommand(cmd, table, node.objtype == OT.OBJECT_INDEX, fx)
    return ()


def _rename(node: Any, fx: Effects) -> tuple[str, ...]:
    """RENAME of a table, column, constraint, trigger, view: AccessExclusiveLock; ALTER INDEX
    ... RENAME: ShareUpdateExclusiveLock (PostgreSQL 12+)."""
    if node.relation is not None:
        index = node.renameType == OT.OBJECT_INDEX
        fx.lock(rel_name(node.relation), SHARE_UPDATE_EXCLUSIVE if index else ACCESS_EXCLUSIVE)
    return ()


def _on_relation(mode: str, attr: str = "relation") -> Callable[[Any, Effects], tuple[str, ...]]:
    def handler(node: Any, fx: Effects) -> tuple[str, ...]:
        rv = getattr(node, attr)
        if rv is not None:
            fx.lock(rel_name(rv), mode)
        return ()

    return handler


def _comment(node: Any, fx: Effects) -> tuple[str, ...]:
    """COMMENT ON a table, index, view or column: ShareUpdateExclusiveLock on the relation;
    on a constraint, trigger, rule or policy: AccessShareLock on its table."""
    names = node.object
    if node.objtype in _RELATION_OBJECTS:
        fx.lock(dotted(names), SHARE_UPDATE_EXCLUSIVE)
    elif node.objtype == OT.OBJECT_COLUMN:
        fx.lock(dotted(names[:-1]), SHARE_UPDATE_EXCLUSIVE)
    elif node.objtype in _ON_TABLE_OBJECTS:
        fx.lock(dotted(names[:-1]), ACCESS_SHARE)
    return ()


def _create_seq(node: Any, fx: Effects) -> tuple[str, ...]:
    name = rel_name(node.sequence)
    fx.lock(name, ACCESS_EXCLUSIVE)
    return (name,)


def _alter_seq(node: Any, fx: Effects) -> tuple[str, ...]:
    """ALTER SEQUENCE: ShareRowExclusiveLock; changing its parameters (anything but OWNED
    BY) gives the sequence a new relfilenode, a trivial "rewrite" of one row."""
    fx.lock(rel_name(node.sequence), SHARE_ROW_EXCLUSIVE)
    fx.rewrite = any(d.defname != "owned_by" for d in node.options or ())
    return ()


def _lock(node: Any, fx: Effects) -> tuple[str, ...]:
    for rv in node.relations:
        fx.lock(rel_name(rv), mode_from_number(node.mode))
    return ()


def _copy(node: Any, fx: Effects) -> tuple[str, ...]:
    if node.relation is not None:
        fx.lock(rel_name(node.relation), ROW_EXCLUSIVE if node.is_from else ACCESS_SHARE)
    if node.query is not None:
        _reads(node.query, fx)
    return ()


def _explain(node: Any, fx: Effects) -> tuple[str, ...]:
    _reads(node.query, fx)  # planning locks what the query names
    return ()


def _create_stats(node: Any, fx: Effects) -> tuple[str, ...]:
    for rv in node.relations:
        if isinstance(rv, ast.RangeVar):
            fx.lock(rel_name(rv), SHARE_UPDATE_EXCLUSIVE)
    return ()


def _alter_domain(node: Any, fx: Effects) -> tuple[str, ...]:
    if node.subtype in ("C", "N", "V"):  # ADD CONSTRAINT, SET NOT NULL, VALIDATE
        fx.lock(UNKNOWN_RELATION, SHARE)  # every table with a column of the domain
        fx.scan = True
    return ()


def _create_schema(node: Any, fx: Effects) -> tuple[str, ...]:
    created: list[str] = []
    for elt in node.schemaElts or ():  # CREATE SCHEMA s CREATE TABLE ... (rare)
        handler = _HANDLERS.get(type(elt))
        if handler is not None:
            created.extend(handler(elt, fx))
    return tuple(created)


_HANDLERS: dict[type, Callable[[Any, Effects], tuple[str, ...]]] = {
    ast.SelectStmt: _select,
    ast.InsertStmt: _dml,
    ast.UpdateStmt: _dml,
    ast.DeleteStmt: _dml,
    ast.MergeStmt: _dml,
    ast.CopyStmt: _copy,
    ast.ExplainStmt: _explain,
    ast.LockStmt: _lock,
    ast.CreateStmt: create_table,
    ast.CreateForeignTableStmt: create_table,
    ast.CreateTableAsStmt: _create_as,
    ast.ViewStmt: _view,
    ast.IndexStmt: _index,
    ast.DropStmt: _drop,
    ast.AlterTableStmt: _alter_table,
    ast.RenameStmt: _rename,
    ast.AlterObjectSchemaStmt: _on_relation(ACCESS_EXCLUSIVE),
    ast.CommentStmt: _comment,
    ast.CreateSeqStmt: _create_seq,
    ast.AlterSeqStmt: _alter_seq,
    ast.TruncateStmt: truncate,
    ast.ClusterStmt: cluster,
    ast.VacuumStmt: vacuum,
    ast.ReindexStmt: reindex,
    ast.RefreshMatViewStmt: refresh_matview,
    ast.CreateTrigStmt: _on_relation(SHARE_ROW_EXCLUSIVE),
    ast.CreatePolicyStmt: _on_relation(ACCESS_EXCLUSIVE, "table"),
    ast.AlterPolicyStmt: _on_relation(ACCESS_EXCLUSIVE, "table"),
    ast.RuleStmt: _on_relation(ACCESS_EXCLUSIVE),
    ast.CreateStatsStmt: _create_stats,
    ast.AlterDomainStmt: _alter_domain,
    ast.CreateSchemaStmt: _create_schema,
}


# --- statements out of a text ---------------------------------------------------------------


def facts_of(sql: str, node: Any) -> StatementFacts:
    """The facts of one parsed statement (`node` is a RawStmt's `.stmt`)."""
    fx = Effects()
    creates: tuple[str, ...] = ()
    handler = _HANDLERS.get(type(node))
    if handler is not None:
        try:
            creates = handler(node, fx)
        except (AttributeError, TypeError, IndexError, ValueError):
            # A shape of node the handler did not expect: say "unknown", never raise.
            fx = Effects()
            fx.lock(UNKNOWN_RELATION, UNKNOWN)
    elif isinstance(node, NON_TRANSACTIONAL_STATEMENTS):
        fx.transactional = False
    elif not isinstance(node, LOCKLESS_STATEMENTS):
        fx.lock(UNKNOWN_RELATION, UNKNOWN)  # DO, CALL, EXECUTE, ...: could do anything
    merged: dict[str, str] = {}
    for relation, mode in fx.locks:
        merged[relation] = strongest((merged[relation], mode)) if relation in merged else mode
    return StatementFacts(
        sql=sql,
        kind=type(node).__name__,
        locks=tuple(RelationLock(r, m) for r, m in merged.items()),
        rewrite=fx.rewrite,
        scan=fx.scan,
        transactional=fx.transactional,
        schema_change=not isinstance(node, DATA_STATEMENTS)
        or (isinstance(node, ast.SelectStmt) and node.intoClause is not None),
        creates=creates,
        node=node,
    )


def _unparsed(sql: str, error: str) -> StatementFacts:
    return StatementFacts(
        sql=sql,
        kind="unparsed",
        locks=(RelationLock(UNKNOWN_RELATION, UNKNOWN),),
        rewrite=False,
        scan=False,
        transactional=True,
        schema_change=True,
        parse_error=error,
    )


def _slice(text: str, raw: Any) -> str:
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(text)
    return text[start:end].strip()


def _chunks(sql: str) -> Iterator[str]:
    """Statement texts cut at top-level semicolons by PostgreSQL's scanner (strings, quoted
    identifiers, dollar quotes and comments respected), leading comments dropped. Used only
    when the whole text does not parse, so each statement can fail on its own."""
    try:
        tokens = scan(sql)
    except ParseError:  # e.g. an unterminated quoted string: nothing can be cut reliably
        if sql.strip():
            yield sql.strip()
        return
    start: int | None = None
    end = 0
    for tok in tokens:
        if tok.name == "ASCII_59":
            if start is not None:
                yield sql[start:end]
            start = None
        elif tok.name not in ("SQL_COMMENT", "C_COMMENT"):
            start = tok.start if start is None else start
            end = tok.end + 1
    if start is not None:
        yield sql[start:end]


def _statements(sql: str) -> Iterator[tuple[str, Any | None, str | None]]:
    """(text, node, error) for every statement of `sql`, transaction control included."""
    try:
        raws = parse_sql(sql)
    except ParseError:
        for chunk in _chunks(sql):
            try:
                parsed = parse_sql(chunk)
            except ParseError as exc:
                yield chunk, None, str(exc)
                continue
            for raw in parsed:
                yield _slice(chunk, raw), raw.stmt, None
        return
    for raw in raws:
        yield _slice(sql, raw), raw.stmt, None


def analyze_blocks(sql: str) -> list[tuple[StatementFacts, bool]]:
    """Every statement of `sql` with whether it sits inside an explicit transaction block
    (after a BEGIN / START TRANSACTION of the same text, before its COMMIT / ROLLBACK).
    Alembic's offline SQL brackets an autocommit_block() with COMMIT; ... BEGIN;, so a
    CREATE INDEX CONCURRENTLY written that way is seen outside a block."""
    out: list[tuple[StatementFacts, bool]] = []
    in_block = False
    for text, node, error in _statements(sql):
        if node is None:
            out.append((_unparsed(text, error or "parse error"), in_block))
        elif isinstance(node, ast.TransactionStmt):
            if node.kind in (TK.TRANS_STMT_BEGIN, TK.TRANS_STMT_START):
                in_block = True
            elif node.kind in (TK.TRANS_STMT_COMMIT, TK.TRANS_STMT_ROLLBACK, TK.TRANS_STMT_PREPARE):
                in_block = bool(node.chain)  # COMMIT AND CHAIN opens the next one at once
        else:
            out.append((facts_of(text, node), in_block))
    return out


def analyze(sql: str) -> list[StatementFacts]:
    """The facts of every statement of `sql` (transaction control left out). Never raises
    on bad SQL: a statement pglast cannot parse is reported with kind "unparsed"."""
    return [facts for facts, _ in analyze_blocks(sql)]
