"""Column rules: type changes, NOT NULL, and defaults that rewrite or scan the table.

Assumes PostgreSQL 11 or later, where ADD COLUMN with a non-volatile default is instant
(the default is stored once in the catalog, not written into every row).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums

from dashboard.review.model import Finding, PlanContext, StatementFacts
from dashboard.review.rules.base import (
    BaseRule,
    alter_table,
    column_constraints,
    is_new,
    register,
    statement_node,
)

# Functions whose value differs per row (VOLATILE in pg_proc), commonly seen in defaults.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "setseed",
        "gen_random_uuid",
        "gen_random_bytes",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "currval",
        "lastval",
    }
)
# IMMUTABLE or STABLE functions: evaluated once when the column is added.
NON_VOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "transaction_timestamp",
        "statement_timestamp",
        "current_setting",
        "current_schema",
        "timezone",
        "date_trunc",
        "make_interval",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "to_timestamp",
        "to_date",
        "to_char",
        "lower",
        "upper",
        "btrim",
        "ltrim",
        "rtrim",
        "concat",
        "concat_ws",
        "replace",
        "length",
        "md5",
        "abs",
        "round",
        "floor",
        "ceil",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "json_build_array",
        "to_json",
        "to_jsonb",
        "array_fill",
    }
)
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})

_DEFAULT = enums.ConstrType.CONSTR_DEFAULT
_NOT_NULL = enums.ConstrType.CONSTR_NOTNULL
_IDENTITY = enums.ConstrType.CONSTR_IDENTITY
_GENERATED = enums.ConstrType.CONSTR_GENERATED


def _walk(value: Any) -> Iterator[ast.Node]:
    """Every pglast node under `value` (a node, or nested tuples of nodes), itself included."""
    if isinstance(value, ast.Node):
        yield value
        for attr in value:
            yield from _walk(getattr(value, attr, None))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _walk(item)


def _function_name(call: ast.FuncCall) -> str:
    parts = [n.sval for n in call.funcname or () if isinstance(n, ast.String) and n.sval]
    return parts[-1].lower() if parts else ""


def volatility(expr: ast.Node | None) -> tuple[str, list[str]]:
    """("volatile" | "unknown" | "stable", the function names that decided it).

    Read from the expression alone, without the catalog: a function on the volatile list
    makes it volatile; a function on neither list makes it unknown (it may be a user
    function declared VOLATILE); constants, casts, operators and CURRENT_TIMESTAMP-style
    keywords are not volatile.
    """
    volatile: list[str] = []
    unknown: list[str] = []
    for node in _walk(expr):
        if isinstance(node, ast.FuncCall):
            name = _function_name(node)
            if name in VOLATILE_FUNCTIONS:
                volatile.append(name)
            elif name not in NON_VOLATILE_FUNCTIONS:
                unknown.append(name)
    if volatile:
        return "volatile", volatile
    if unknown:
        return "unknown", unknown
    return "stable", []


def _type_name(coldef: ast.ColumnDef) -> str:
    tn = coldef.typeName
    if tn is None:
        return ""
    parts = [n.sval for n in tn.names or () if isinstance(n, ast.String) and n.sval]
    return parts[-1].lower() if parts else ""


def _default_of(coldef: ast.ColumnDef) -> ast.Node | None:
    """The DEFAULT expression, None when absent or an explicit DEFAULT NULL."""
    for c in column_constraints(coldef):
        if c.contype == _DEFAULT:
            expr = c.raw_expr
            if isinstance(expr, ast.A_Const) and expr.isnull:
                return None
            return expr if isinstance(expr, ast.Node) else None
    return None


def _fills_itself(coldef: ast.ColumnDef) -> bool:
    """Serial, identity or generated: the column gets values without a DEFAULT clause."""
    if _type_name(coldef) in SERIAL_TYPES:
        return True
    return any(c.contype in (_IDENTITY, _GENERATED) for c in column_constraints(coldef))


def _cmds(
    node: ast.Node | None, subtype: enums.AlterTableType
) -> tuple[str, list[ast.AlterTableCmd]]:
    found = alter_table(node)
    if found is None:
        return "", []
    table, cmds = found
    return table, [c for c in cmds if c.subtype == subtype]


def _added_columns(node: ast.Node | None) -> tuple[str, list[ast.ColumnDef]]:
    table, cmds = _cmds(node, enums.AlterTableType.AT_AddColumn)
    return table, [c.def_ for c in cmds if isinstance(c.def_, ast.ColumnDef)]


@register
class ChangingColumnType(BaseRule):
    id = "changing-column-type"
    severity = "high"
    reason = (
        "Changing a column's type usually rewrites the whole table and rebuilds its indexes "
        "under an AccessExclusiveLock: reads and writes wait until it is done."
    )
    safer = (
        "Add a new column of the new type, write to both from the application, backfill "
        "in batches, switch reads, then drop the old column. Only binary-coercible changes "
        "(varchar(n) to text, or a larger varchar(n)) skip the rewrite."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        table, cmds = _cmds(statement_node(stmt), enums.AlterTableType.AT_AlterColumnType)
        if not cmds or is_new(table, ctx):
            return []
        out: list[Finding] = []
        for cmd in cmds:
            coldef = cmd.def_ if isinstance(cmd.def_, ast.ColumnDef) else None
            using = coldef is not None and coldef.raw_default is not None
            new_type = _type_name(coldef) if coldef is not None else "another type"
            if stmt.rewrite or stmt.scan or using:
                out.append(
                    self.finding(
                        f"Changing {table}.{cmd.name} to {new_type} rewrites {table} and "
                        "rebuilds its indexes under an AccessExclusiveLock: reads and "
                        f"writes of {table} wait until it is done."
                    )
                )
            else:
                out.append(
                    self.finding(
                        f"Changing {table}.{cmd.name} to {new_type} takes an "
                        f"AccessExclusiveLock on {table}; no rewrite is expected (a "
                        "binary-coercible change), but code reading the column may break.",
                        severity="medium",
                    )
                )
        return out


@register
class AddingNotNullableField(BaseRule):
    id = "adding-not-nullable-field"
    severity = "high"
    reason = (
        "SET NOT NULL reads every row to check for NULLs while holding an "
        "AccessExclusiveLock (reads and writes wait); ADD COLUMN ... NOT NULL without a "
        "default fails on a table that has rows."
    )
    safer = (
        "Add CHECK (col IS NOT NULL) NOT VALID, backfill, VALIDATE CONSTRAINT (scans "
        "under ShareUpdateExclusiveLock, traffic continues), then SET NOT NULL (PostgreSQL "
        "12+ skips the scan thanks to the valid check) and drop the check. For a new "
        "column, give it a non-volatile DEFAULT."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        node = statement_node(stmt)
        table, set_not_null = _cmds(node, enums.AlterTableType.AT_SetNotNull)
        if not table or is_new(table, ctx):
            return []
        out = [
            self.finding(
                f"SET NOT NULL on {table}.{cmd.name} reads every row of {table} under an "
                f"AccessExclusiveLock: reads and writes of {table} wait until it is done."
            )
            for cmd in set_not_null
        ]
        for col in _added_columns(node)[1]:
            not_null = bool(col.is_not_null) or any(
                c.contype == _NOT_NULL for c in column_constraints(col)
            )
            if not_null and _default_of(col) is None and not _fills_itself(col):
                out.append(
                    self.finding(
                        f"Adding {table}.{col.colname} as NOT NULL without a DEFAULT fails "
                        f"as soon as {table} has a row (existing rows would get NULL).",
                        severity="medium",
                    )
                )
        return out


@register
class AddingFieldWithDefault(BaseRule):
    id = "adding-field-with-default"
    severity = "high"
    reason = (
        "Adding a column whose value is computed per row (a volatile DEFAULT such as "
        "random() or gen_random_uuid(), a serial or identity column, a stored generated "
        "column) rewrites the whole table under an AccessExclusiveLock. A non-volatile "
        "default (a constant, now()) is instant on PostgreSQL 11+."
    )
    safer = (
        "Add the column without a default (or with a constant one), set the volatile "
        "default with ALTER COLUMN ... SET DEFAULT (affects new rows only), and backfill "
        "existing rows in batches."
    )

    def check(self, stmt: StatementFacts, ctx: PlanContext) -> list[Finding]:
        table, columns = _added_columns(statement_node(stmt))
        if not columns or is_new(table, ctx):
            return []
        out: list[Finding] = []
        for col in columns:
            where = f"{table}.{col.colname}"
            rewrite = (
                f"rewrites {table} under an AccessExclusiveLock: reads and writes of "
                f"{table} wait until every row is written."
            )
            if _type_name(col) in SERIAL_TYPES:
                out.append(self.finding(f"Adding {where} as {_type_name(col)} {rewrite}"))
                continue
            kinds = {c.contype: c for c in column_constraints(col)}
            if _IDENTITY in kinds:
                out.append(self.finding(f"Adding identity column {where} {rewrite}"))
                continue
            generated = kinds.get(_GENERATED)
            if generated is not None and generated.generated_kind != "v":
                out.append(self.finding(f"Adding stored generated column {where} {rewrite}"))
                continue
            how, names = volatility(_default_of(col))
            if how == "volatile":
                out.append(
                    self.finding(
                        f"Adding {where} with the volatile default {', '.join(names)}() {rewrite}"
                    )
                )
            elif how == "unknown":
                out.append(
                    self.finding(
                        f"Adding {where} with a default that calls {', '.join(names)}(): "
                        "if that function is VOLATILE this rewrites "
                        f"{table} under an AccessExclusiveLock (reads and writes wait).",
                        severity="medium",
                    )
                )
        return out
