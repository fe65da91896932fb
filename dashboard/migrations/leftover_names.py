"""What a committed statement left in the database, named with pglast (pure).

`effects_of(sql)` names the objects a statement created, dropped or changed, with what a
retry of its revision must do about them. Used by `leftovers.py` for the steps of a
failed revision that ran outside a transaction (CREATE INDEX CONCURRENTLY, ALTER TYPE ...
ADD VALUE, or anything sent in autocommit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import ObjectType
from pglast.parser import ParseError

from dashboard.review.sql_names import dotted, qualified, range_var

# Statements that leave nothing a retry has to cope with.
_HARMLESS = (
    ast.VariableSetStmt,
    ast.VariableShowStmt,
    ast.VacuumStmt,
    ast.ExplainStmt,
    ast.CheckPointStmt,
    ast.DiscardStmt,
    ast.ReindexStmt,
    ast.TransactionStmt,
    ast.LockStmt,
    ast.NotifyStmt,
    ast.ClusterStmt,
    ast.CommentStmt,
)

_IDEMPOTENT = "write it with IF NOT EXISTS, or drop it before retrying."


@dataclass(frozen=True)
class Effect:
    """One lasting change: `name` identifies it, `what` says it in a phrase."""

    name: str
    what: str
    retry: str
    table: str | None = None
    fix: str | None = None


def _kind(t: ObjectType | None) -> str:
    if t is None:
        return "object"
    return (
        t.name.removeprefix("OBJECT_")
        .replace("_", " ")
        .lower()
        .replace("matview", "materialized view")
    )


def _words(camel: str) -> str:
    """`AddColumn` -> `add column` (an enum member's name, for a message)."""
    return "".join(f" {c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(camel))


def _created(
    kind: str,
    name: str,
    *,
    table: str | None = None,
    drop: str | None = None,
    retry: str = _IDEMPOTENT,
) -> Effect:
    where = f" on {table}" if table else ""
    return Effect(name, f"{kind} {name}{where} was created", retry, table, drop)


def _index(node: ast.IndexStmt) -> Effect:
    table = range_var(node.relation)
    if not node.idxname:
        return Effect(
            f"unnamed index on {table}",
            f"an unnamed index on {table} was created",
            "it would create a second, duplicate index: drop this one first (its name is "
            "in \\d of the table), or give the index a name and use IF NOT EXISTS.",
            table,
        )
    name = qualified(node.relation.schemaname if node.relation else None, node.idxname)
    return _created(
        "index",
        name,
        table=table,
        drop=f"DROP INDEX CONCURRENTLY {name};",
        retry="write it as CREATE INDEX CONCURRENTLY IF NOT EXISTS, or drop it before "
        "retrying (check it is not INVALID: IF NOT EXISTS keeps an invalid index as it is).",
    )


def _enum(node: ast.AlterEnumStmt) -> Effect:
    type_name = dotted(node.typeName)
    if node.oldVal:
        return Effect(
            f"{type_name} value '{node.newVal}'",
            f"value '{node.oldVal}' of enum type {type_name} was renamed to '{node.newVal}'",
            f"RENAME VALUE fails when '{node.oldVal}' no longer exists: skip it on retry.",
        )
    return Effect(
        f"{type_name} value '{node.newVal}'",
        f"value '{node.newVal}' was added to enum type {type_name}",
        "use ALTER TYPE ... ADD VALUE IF NOT EXISTS (an enum value cannot be dropped "
        "without recreating the type).",
    )


def _drop(node: ast.DropStmt) -> list[Effect]:
    kind = _kind(node.removeType)
    out = []
    for obj in node.objects or ():
        if isinstance(obj, ast.TypeName):
            name = dotted(obj.names)
        elif isinstance(obj, ast.ObjectWithArgs):
            name = dotted(obj.objname)
        elif isinstance(obj, tuple | list):
            name = dotted(obj)
        else:
            name = str(getattr(obj, "sval", obj))
        out.append(
            Effect(
                name,
                f"{kind} {name} was dropped",
                "it stays dropped: write the drop as DROP ... IF EXISTS, or the retry fails on it.",
            )
        )
    return out


def _alter_table(node: ast.AlterTableStmt) -> Effect:
    table = range_var(node.relation)
    actions = []
    for cmd in node.cmds or ():
        action = _words(cmd.subtype.name.removeprefix("AT_")) if cmd.subtype is not None else "?"
        column = getattr(cmd.def_, "colname", None) or cmd.name
        actions.append(f"{action} {column}" if column else action)
    summary = ", ".join(actions)
    return Effect(
        f"{table}: {summary}",
        f"{_kind(node.objtype)} {table} was altered ({summary})",
        "make each action idempotent (ADD COLUMN IF NOT EXISTS, DROP ... IF EXISTS, "
        "...), or undo it before retrying.",
        table,
    )


def _data(verb: str) -> Callable[[Any], Effect]:
    def effect(node: Any) -> Effect:
        table = range_var(node.relation)
        return Effect(
            f"data in {table}",
            f"rows {verb} in {table} were committed",
            "the retry must not apply them twice (write the change so that running it "
            "again does nothing).",
            table,
        )

    return effect


def _simple(node: Any) -> list[Effect] | None:
    """Statements that create one named object; None when `node` is none of them."""
    match node:
        case ast.CreateStmt():
            name = range_var(node.relation)
            return [_created("table", name, drop=f"DROP TABLE {name};")]
        case ast.CreateTableAsStmt():
            kind = _kind(node.objtype)
            name = range_var(node.into.rel if node.into else None)
            return [_created(kind, name, drop=f"DROP {kind.upper()} {name};")]
        case ast.SelectStmt() if node.intoClause is not None:
            name = range_var(node.intoClause.rel)
            return [_created("table", name, drop=f"DROP TABLE {name};")]
        case ast.ViewStmt():
            name = range_var(node.view)
            retry = "use CREATE OR REPLACE VIEW, or drop it before retrying."
            return [_created("view", name, drop=f"DROP VIEW {name};", retry=retry)]
        case ast.CreateSeqStmt():
            name = range_var(node.sequence)
            return [_created("sequence", name, drop=f"DROP SEQUENCE {name};")]
        case ast.CreateEnumStmt() | ast.CreateDomainStmt():
            names = node.typeName if isinstance(node, ast.CreateEnumStmt) else node.domainname
            kind = "type" if isinstance(node, ast.CreateEnumStmt) else "domain"
            name = dotted(names)
            retry = "guard the creation (it has no IF NOT EXISTS), or drop it before retrying."
            return [_created(kind, name, drop=f"DROP {kind.upper()} {name};", retry=retry)]
        case ast.CompositeTypeStmt():
            name = range_var(node.typevar)
            retry = "guard the creation (it has no IF NOT EXISTS), or drop it before retrying."
            return [_created("type", name, drop=f"DROP TYPE {name};", retry=retry)]
        case ast.CreateSchemaStmt():
            name = qualified(node.schemaname)
            return [_created("schema", name, drop=f"DROP SCHEMA {name};")]
        case ast.CreateExtensionStmt():
            name = qualified(node.extname)
            return [_created("extension", name, drop=f"DROP EXTENSION {name};")]
        case ast.CreateFunctionStmt():
            kind = "procedure" if node.is_procedure else "function"
            retry = f"use CREATE OR REPLACE {kind.upper()}, or drop it before retrying."
            return [_created(kind, dotted(node.funcname), retry=retry)]
        case ast.CreateTrigStmt():
            table = range_var(node.relation)
            name = qualified(node.trigname)
            retry = "use CREATE OR REPLACE TRIGGER, or drop it before retrying."
            drop = f"DROP TRIGGER {name} ON {table};"
            return [_created("trigger", name, table=table, drop=drop, retry=retry)]
    return None


def _effects_of_node(node: Any) -> list[Effect] | None:
    """The effects of one statement: [] when it leaves nothing, None when unknown."""
    if isinstance(node, _HARMLESS) or (
        isinstance(node, ast.SelectStmt) and node.intoClause is None
    ):
        return []
    simple = _simple(node)
    if simple is not None:
        return simple
    match node:
        case ast.IndexStmt():
            return [_index(node)]
        case ast.AlterEnumStmt():
            return [_enum(node)]
        case ast.DropStmt():
            return _drop(node)
        case ast.AlterTableStmt():
            return [_alter_table(node)]
        case ast.InsertStmt():
            return [_data("inserted")(node)]
        case ast.UpdateStmt():
            return [_data("updated")(node)]
        case ast.DeleteStmt():
            return [_data("deleted")(node)]
        case ast.RenameStmt():
            old = range_var(node.relation) if node.relation else dotted(_as_names(node.object))
            kind = _kind(node.renameType)
            return [
                Effect(
                    f"{old} renamed to {node.newname}",
                    f"{kind} {old} was renamed to {qualified(node.newname)}",
                    "the old name no longer exists: guard the rename, or undo it first.",
                )
            ]
    return None


def _as_names(obj: Any) -> Iterable[Any]:
    if isinstance(obj, tuple | list):
        return obj
    return getattr(obj, "names", None) or getattr(obj, "objname", None) or ()


def effects_of(sql: str) -> list[Effect] | None:
    """The lasting effects of `sql` (one or more statements), or None when it does not
    parse. A parsed statement this module does not know gives one generic effect."""
    try:
        raws = parse_sql(sql)
    except ParseError:
        return None
    out: list[Effect] = []
    for raw in raws:
        effects = _effects_of_node(raw.stmt)
        if effects is None:
            text = " ".join(_piece(sql, raw, len(raws)).split())[:120]
            effects = [
                Effect(
                    text,
                    f"the effect of `{text}`",
                    "check what it changed and make the retry cope with it (IF NOT EXISTS / "
                    "IF EXISTS, or undo it first).",
                )
            ]
        out.extend(effects)
    return out


def _piece(sql: str, raw: ast.RawStmt, count: int) -> str:
    """The text of one statement of `sql` (pglast locations are UTF-8 byte offsets)."""
    if count == 1:
        return sql
    data = sql.encode()
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(data)
    return data[start:end].decode(errors="replace")
