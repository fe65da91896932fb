"""Statements on tables themselves: ALTER TABLE (the lock, rewrite and scan of each
subcommand, PostgreSQL 15), CREATE TABLE, and the maintenance commands that rewrite or scan
(TRUNCATE, CLUSTER, VACUUM, REINDEX, REFRESH MATERIALIZED VIEW).

Lock levels follow PostgreSQL 15's `AlterTableGetLockLevel()` and the ALTER TABLE reference
page: AccessExclusiveLock unless the docs name a weaker one (SET STATISTICS, attribute
options, CLUSTER ON / SET WITHOUT CLUSTER, VALIDATE CONSTRAINT and some storage
parameters: ShareUpdateExclusiveLock; ADD FOREIGN KEY and ENABLE/DISABLE TRIGGER:
ShareRowExclusiveLock; ATTACH PARTITION and DETACH PARTITION CONCURRENTLY:
ShareUpdateExclusiveLock on the partitioned table). Where one statement has several
subcommands the strongest lock wins and rewrite/scan are ORed (the caller merges).

`scan` means "reads the whole table while holding the lock": validation of a new
constraint, SET NOT NULL, an index build, and every rewrite that copies rows (not TRUNCATE
or REFRESH MATERIALIZED VIEW, which get new storage without reading the old).
"""

from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType as CT
from pglast.enums import ReindexObjectType as RT

from dashboard.review.lock_table import UNKNOWN_RELATION, Effects, nodes, rel_name
from dashboard.review.model import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
)

# Functions whose value differs per row (or that PostgreSQL marks VOLATILE): a DEFAULT using
# one makes ADD COLUMN evaluate it for every existing row, i.e. rewrite the table.
VOLATILE_FUNCTIONS = frozenset(
    """
    random random_normal gen_random_uuid uuidv4 uuidv7 uuid_generate_v1 uuid_generate_v1mc
    uuid_generate_v4 uuid_generate_v7 gen_random_bytes clock_timestamp timeofday nextval
    currval lastval setval txid_current pg_current_xact_id
    """.split()
)
# Built-ins that are STABLE or IMMUTABLE: evaluated once for ADD COLUMN (PostgreSQL 11+
# stores the value as the column's "missing" value, no rewrite). A function in neither set
# is treated as volatile, PostgreSQL's default for a function created without a marker.
NON_VOLATILE_FUNCTIONS = frozenset(
    """
    now transaction_timestamp statement_timestamp current_timestamp current_date
    localtimestamp current_setting lower upper btrim ltrim rtrim trim concat concat_ws
    format length substr substring replace md5 abs round floor ceil make_date make_time
    make_timestamp make_timestamptz make_interval date_trunc timezone to_timestamp to_date
    to_char to_json to_jsonb json_build_object jsonb_build_object json_build_array
    jsonb_build_array array_fill
    """.split()
)


def _subcommands(names: str) -> frozenset[AT]:
    return frozenset(getattr(AT, f"AT_{name}") for name in names.split())


SERIAL_TYPES = frozenset({"smallserial", "serial2", "serial", "serial4", "bigserial", "serial8"})

# Storage parameters that ALTER TABLE ... SET/RESET changes under ShareUpdateExclusiveLock
# (PostgreSQL 15 reloptions.c); any other parameter takes AccessExclusiveLock.
_SUE_RELOPTIONS = frozenset(
    """
    fillfactor autovacuum_enabled toast_tuple_target parallel_workers vacuum_index_cleanup
    vacuum_truncate log_autovacuum_min_duration
    """.split()
)

_SUE_SUBCOMMANDS = _subcommands(
    """
    SetStatistics SetOptions ResetOptions ClusterOn DropCluster ValidateConstraint
    DetachPartitionFinalize
    """
)
_SRE_SUBCOMMANDS = _subcommands(
    """
    EnableTrig EnableAlwaysTrig EnableReplicaTrig DisableTrig EnableTrigAll DisableTrigAll
    EnableTrigUser DisableTrigUser
    """
)
# Subcommands that give the table a new relfilenode (PostgreSQL copies every row).
_REWRITE_SUBCOMMANDS = _subcommands(
    """
    AlterColumnType SetLogged SetUnLogged SetAccessMethod SetTableSpace SetExpression
    """
)


def is_volatile(expr: Any) -> bool:
    """Whether a DEFAULT expression may give each row a different value."""
    for n in nodes(expr):
        if isinstance(n, ast.FuncCall):
            name = n.funcname[-1].sval.lower() if n.funcname else ""
            if name in VOLATILE_FUNCTIONS or name not in NON_VOLATILE_FUNCTIONS:
                return True
        elif isinstance(n, ast.SubLink):
            return True  # a subquery: evaluated per row as far as we can tell
    return False


def _constraint(con: Any, table: str, fx: Effects, *, column: bool, default: bool = False) -> None:
    """A constraint added to an existing table (ADD CONSTRAINT, or inline in ADD COLUMN,
    where `default` says whether the new column has a DEFAULT)."""
    kind = con.contype
    validates = not con.skip_validation
    if kind == CT.CONSTR_FOREIGN:
        fx.lock(table, SHARE_ROW_EXCLUSIVE)
        fx.lock(rel_name(con.pktable), SHARE_ROW_EXCLUSIVE)
        # A foreign key on a column being added without a default is not validated: every
        # row holds NULL (PostgreSQL's parse_utilcmd.c skips the check).
        fx.scan |= validates and (default or not column)
    elif kind in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE, CT.CONSTR_EXCLUSION):
        fx.lock(table, ACCESS_EXCLUSIVE)
        fx.scan |= not con.indexname  # builds an index unless USING INDEX
    elif kind in (CT.CONSTR_CHECK, CT.CONSTR_NOTNULL):
        fx.lock(table, ACCESS_EXCLUSIVE)
        fx.scan |= validates
    elif kind in (CT.CONSTR_IDENTITY, CT.CONSTR_GENERATED) and column:
        fx.lock(table, ACCESS_EXCLUSIVE)
        fx.rewrite = fx.scan = True  # every existing row gets its own value
    else:
        fx.lock(table, ACCESS_EXCLUSIVE)


def add_column(coldef: Any, table: str, fx: Effects) -> None:
    """ADD COLUMN: AccessExclusiveLock; a rewrite only for a volatile default, a serial,
    an identity or a stored generated column (PostgreSQL 11+ stores a non-volatile default
    without touching the rows); a scan for NOT NULL without a default, CHECK, UNIQUE,
    PRIMARY KEY, and REFERENCES with a default."""
    fx.lock(table, ACCESS_EXCLUSIVE)
    type_name = coldef.typeName.names[-1].sval if coldef.typeName else ""
    if type_name in SERIAL_TYPES:
        fx.rewrite = True
    constraints = coldef.constraints or ()
    defaults = [con.raw_expr for con in constraints if con.contype == CT.CONSTR_DEFAULT]
    has_default = bool(defaults)
    fx.rewrite |= any(is_volatile(expr) for expr in defaults)
    not_null = False
    for con in constraints:
        if con.contype == CT.CONSTR_NOTNULL:
            not_null = True
        elif con.contype != CT.CONSTR_DEFAULT:
            _constraint(con, table, fx, column=True, default=has_default)
    if not_null and not has_default:
        fx.scan = True  # PostgreSQL checks that no existing row is left NULL
    fx.scan |= fx.rewrite


def _reloptions_mode(defs: Any) -> str:
    for d in defs or ():
        if d.defname not in _SUE_RELOPTIONS and not d.defname.startswith("autovacuum_"):
            return ACCESS_EXCLUSIVE
    return SHARE_UPDATE_EXCLUSIVE


def subcommand(cmd: Any, table: str, is_index: bool, fx: Effects) -> None:
    """Add the effects of one ALTER TABLE subcommand on `table` to `fx`."""
    st = cmd.subtype
    if st == AT.AT_AddColumn:
        add_column(cmd.def_, table, fx)
    elif st in (AT.AT_AddConstraint, AT.AT_AddIndexConstraint) and isinstance(
        cmd.def_, ast.Constraint
    ):
        _constraint(cmd.def_, table, fx, column=False)
    elif st in (AT.AT_SetNotNull,):
        fx.lock(table, ACCESS_EXCLUSIVE)
        fx.scan = True
    elif st in _SUE_SUBCOMMANDS:
        fx.lock(table, SHARE_UPDATE_EXCLUSIVE)
        fx.scan |= st == AT.AT_ValidateConstraint
    elif st in _SRE_SUBCOMMANDS:
        fx.lock(table, SHARE_ROW_EXCLUSIVE)
    elif st in (AT.AT_SetRelOptions, AT.AT_ResetRelOptions):
        fx.lock(table, _reloptions_mode(cmd.def_))
    elif st == AT.AT_AttachPartition:
        part = rel_name(cmd.def_.name)
        fx.lock(table, SHARE_UPDATE_EXCLUSIVE)
        fx.lock(part, ACCESS_EXCLUSIVE)
        fx.scan |= not is_index  # the new partition's rows are checked against its bound
    elif st == AT.AT_DetachPartition:
        concurrent = bool(cmd.def_.concurrent)
        mode = SHARE_UPDATE_EXCLUSIVE if concurrent else ACCESS_EXCLUSIVE
        fx.lock(table, mode)
        fx.lock(rel_name(cmd.def_.name), mode)
        fx.transactional &= not concurrent
    elif st == AT.AT_AddInherit:
        fx.lock(table, ACCESS_EXCLUSIVE)
        fx.lock(rel_name(cmd.def_), SHARE_UPDATE_EXCLUSIVE)
    elif st == AT.AT_DropInherit:
        fx.lock(table, ACCESS_EXCLUSIVE)
        fx.lock(rel_name(cmd.def_), ACCESS_SHARE)
    else:
        # Everything else (DROP COLUMN / CONSTRAINT, SET / DROP DEFAULT, DROP NOT NULL,
        # ALTER COLUMN TYPE, SET STORAGE, OWNER TO, SET LOGGED, REPLICA IDENTITY, row
        # security, identity, rules, ...) takes AccessExclusiveLock.
        fx.lock(table, ACCESS_EXCLUSIVE)
        if st in _REWRITE_SUBCOMMANDS:
            fx.rewrite = fx.scan = True


def create_table(node: Any, fx: Effects) -> tuple[str, ...]:
    """CREATE TABLE: AccessExclusiveLock on the new table (nothing else can hold it yet);
    ShareRowExclusiveLock on each table a foreign key references; PARTITION OF takes
    AccessExclusiveLock on the parent, INHERITS ShareUpdateExclusiveLock; LIKE reads."""
    base: Any = node.base if isinstance(node, ast.CreateForeignTableStmt) else node
    name = rel_name(base.relation)
    fx.lock(name, ACCESS_EXCLUSIVE)
    for parent in base.inhRelations or ():
        fx.lock(rel_name(parent), ACCESS_EXCLUSIVE if base.partbound else SHARE_UPDATE_EXCLUSIVE)
    for elt in base.tableElts or ():
        cons = elt.constraints if isinstance(elt, ast.ColumnDef) else (elt,)
        for con in cons or ():
            if isinstance(con, ast.Constraint) and con.pktable is not None:
                fx.lock(rel_name(con.pktable), SHARE_ROW_EXCLUSIVE)
        if isinstance(elt, ast.TableLikeClause):
            fx.lock(rel_name(elt.relation), ACCESS_SHARE)
    return (name,)


# --- table maintenance: TRUNCATE, CLUSTER, VACUUM, REINDEX, REFRESH ----------------------


def truncate(node: Any, fx: Effects) -> tuple[str, ...]:
    for rv in node.relations:
        fx.lock(rel_name(rv), ACCESS_EXCLUSIVE)
    fx.rewrite = True  # a new, empty relfilenode
    return ()


def _options(params: Any) -> dict[str, bool]:
    """VACUUM (FULL, ANALYZE false) / REINDEX (CONCURRENTLY) options -> {name: on}."""
    return {
        d.defname: not (isinstance(d.arg, ast.Boolean) and not d.arg.boolval)
        and not (isinstance(d.arg, ast.String) and d.arg.sval in ("false", "off", "0"))
        for d in params or ()
    }


def cluster(node: Any, fx: Effects) -> tuple[str, ...]:
    """CLUSTER: AccessExclusiveLock and a rewrite; without a table it visits every
    clustered table and is refused inside a transaction block."""
    fx.lock(rel_name(node.relation) if node.relation else UNKNOWN_RELATION, ACCESS_EXCLUSIVE)
    fx.rewrite = fx.scan = True
    fx.transactional = node.relation is not None
    return ()


def vacuum(node: Any, fx: Effects) -> tuple[str, ...]:
    """VACUUM FULL: AccessExclusiveLock + rewrite; VACUUM and ANALYZE:
    ShareUpdateExclusiveLock. VACUUM (any form) cannot run in a transaction block."""
    opts = _options(node.options)
    full = node.is_vacuumcmd and opts.get("full", False)
    mode = ACCESS_EXCLUSIVE if full else SHARE_UPDATE_EXCLUSIVE
    targets = [rel_name(r.relation) for r in node.rels or ()] or [UNKNOWN_RELATION]
    for name in targets:
        fx.lock(name, mode)
    fx.rewrite = bool(full)
    fx.scan = bool(node.is_vacuumcmd)
    fx.transactional = not node.is_vacuumcmd
    return ()


def reindex(node: Any, fx: Effects) -> tuple[str, ...]:
    """REINDEX TABLE: ShareLock on the table; REINDEX INDEX: AccessExclusiveLock on the
    index (and ShareLock on its table, not named in the text); CONCURRENTLY:
    ShareUpdateExclusiveLock outside a transaction block, as are SCHEMA/DATABASE/SYSTEM."""
    concurrent = _options(node.params).get("concurrently", False)
    if node.kind in (RT.REINDEX_OBJECT_TABLE, RT.REINDEX_OBJECT_INDEX):
        index = node.kind == RT.REINDEX_OBJECT_INDEX
        mode = SHARE_UPDATE_EXCLUSIVE if concurrent else ACCESS_EXCLUSIVE if index else SHARE
        fx.lock(rel_name(node.relation), mode)
        fx.transactional = not concurrent
        fx.rewrite = index  # the index gets new storage (the table keeps its own)
    else:
        fx.lock(UNKNOWN_RELATION, SHARE_UPDATE_EXCLUSIVE if concurrent else SHARE)
        fx.transactional = False
    fx.scan = True
    return ()


def refresh_matview(node: Any, fx: Effects) -> tuple[str, ...]:
    """REFRESH MATERIALIZED VIEW: AccessExclusiveLock and a new relfilenode;
    CONCURRENTLY: ExclusiveLock (reads keep going), old and new contents compared and the
    differences applied in place."""
    fx.lock(rel_name(node.relation), EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE)
    fx.rewrite = not node.concurrent  # new storage; the old rows are not read
    fx.scan = bool(node.concurrent)  # the old contents are diffed against the new
    return ()
