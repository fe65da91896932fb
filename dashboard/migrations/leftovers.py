"""What a migration run left behind that needs a person (pure, no I/O).

Three kinds (DESIGN: `{"kind", "name", "message"}`, plus `table` and `fix` here):

- `invalid_index`: `pg_index.indisvalid = false`, e.g. left by a failed
  `CREATE INDEX CONCURRENTLY` (a later `CREATE INDEX IF NOT EXISTS` then silently does
  nothing), or one being built right now (not a leftover: no fix);
- `not_valid_constraint`: `pg_constraint.convalidated = false` (added `NOT VALID`);
- `leftover_object`: what a non-transactional step of a failed revision did, which stays
  although the version table says the revision is not applied.

The catalog side is read by `catalog.py`; the statements of a failed revision are named
by `leftover_names.py` (pglast).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dashboard.migrations.leftover_names import Effect, effects_of

INVALID_INDEX = "invalid_index"
NOT_VALID_CONSTRAINT = "not_valid_constraint"
LEFTOVER_OBJECT = "leftover_object"
KINDS = (INVALID_INDEX, NOT_VALID_CONSTRAINT, LEFTOVER_OBJECT)

# How much of an unparseable statement a warning quotes.
QUOTE_CHARS = 120


@dataclass(frozen=True)
class SchemaWarning:
    """One thing in the schema that needs a person: what, where, and the way out."""

    kind: str
    name: str
    message: str
    table: str | None = None
    fix: str | None = None  # the SQL to run (or None when there is no single statement)
    # not a leftover (yet): an index whose build is running right now; nothing to do
    in_progress: bool = False

    def to_json(self) -> dict[str, str | bool | None]:
        return {
            "kind": self.kind,
            "name": self.name,
            "message": self.message,
            "table": self.table,
            "fix": self.fix,
            "in_progress": self.in_progress,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> SchemaWarning:
        """From `to_json()`'s shape (as stored in `runs.warnings`); ValueError when a
        required field is missing or not a string."""

        def text(key: str, required: bool) -> str | None:
            value = data.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise ValueError(f"schema warning: {key!r} must be a string, got {value!r}")
            return value

        kind, name, message = (text(k, True) or "" for k in ("kind", "name", "message"))
        return cls(
            kind,
            name,
            message,
            table=text("table", False),
            fix=text("fix", False),
            in_progress=data.get("in_progress") is True,
        )


def merge_warnings(*groups: Iterable[SchemaWarning]) -> list[SchemaWarning]:
    """All warnings of `groups`, in order, the first of each (kind, name) kept."""
    seen: set[tuple[str, str]] = set()
    out: list[SchemaWarning] = []
    for group in groups:
        for w in group:
            key = (w.kind, w.name)
            if key not in seen:
                seen.add(key)
                out.append(w)
    return out


# -- the catalog's leftovers ----------------------------------------------------------------


def invalid_index_warning(
    index: str,
    table: str,
    *,
    unique: bool = False,
    ready: bool = False,
    partitioned: bool = False,
) -> SchemaWarning:
    """An index with `indisvalid = false` and no build running on it. `index` and `table`
    are qualified, quoted names (`quote_ident`); `ready` is `pg_index.indisready`."""
    if partitioned:
        return SchemaWarning(
            INVALID_INDEX,
            index,
            f"Index {index} on partitioned table {table} is INVALID: it was created ON ONLY "
            "the parent and not every partition has an index attached, so the planner "
            "does not use it. Attach one index per partition (ALTER INDEX "
            f"{index} ATTACH PARTITION <partition's index>), or drop it.",
            table=table,
            fix=f"DROP INDEX {index};",
        )
    if ready:
        writes = "every INSERT and UPDATE still maintains it (write cost, no benefit)"
        if unique:
            writes += ", and as a unique index it still rejects new duplicate values"
    else:
        writes = "writes do not maintain it either (its build stopped before that phase)"
    return SchemaWarning(
        INVALID_INDEX,
        index,
        f"Index {index} on {table} is INVALID (left by a failed or cancelled CREATE INDEX "
        f"CONCURRENTLY or REINDEX CONCURRENTLY): the planner ignores it; {writes}. "
        "While it exists, CREATE INDEX IF NOT EXISTS with this name silently does nothing. "
        "Way out: drop it (DROP INDEX CONCURRENTLY blocks neither reads nor writes), fix "
        "the cause (e.g. duplicate values for a unique index), then retry the run.",
        table=table,
        fix=f"DROP INDEX CONCURRENTLY {index};",
    )


def building_index_warning(
    index: str, table: str, *, pid: int | None, phase: str | None
) -> SchemaWarning:
    """An index with `indisvalid = false` whose build is running right now (its backend
    reports it in `pg_stat_progress_create_index`): not a leftover, so no fix."""
    who = f" by backend {pid}" if pid is not None else ""
    where = f", phase: {phase}" if phase else ""
    return SchemaWarning(
        INVALID_INDEX,
        index,
        f"Index {index} on {table} is being built right now{who}{where}. Queries do not "
        "use it until the build finishes; nothing to do unless that build fails (then "
        "it stays INVALID and this warning says how to drop it).",
        table=table,
        in_progress=True,
    )


def not_valid_constraint_warning(
    constraint: str, table: str, *, kind: str, domain: bool = False
) -> SchemaWarning:
    """A constraint with `convalidated = false`. `constraint` is the quoted constraint
    name, `table` the qualified table (or domain, when `domain`), `kind` what it is
    ("foreign key", "check")."""
    if domain:
        on, verb, existing = "domain", "ALTER DOMAIN", "existing values of this domain"
        lock = (
            "ALTER DOMAIN ... VALIDATE CONSTRAINT takes a SHARE lock on every table using "
            "the domain while it scans them (reads go on, writes to them wait)"
        )
    else:
        on, verb, existing = "table", "ALTER TABLE", "existing rows"
        lock = (
            "VALIDATE CONSTRAINT takes only a SHARE UPDATE EXCLUSIVE lock (a foreign key "
            "also ROW SHARE on the referenced table), so it blocks neither reads nor writes "
            "while it scans"
        )
    return SchemaWarning(
        NOT_VALID_CONSTRAINT,
        f"{table}.{constraint}",
        f"The {kind} constraint {constraint} on {on} {table} is NOT VALID: new and "
        f"updated rows are checked, but {existing} were never checked and may violate it. "
        f"Way out: validate it; {lock}. It fails, naming a violating row, if there is one: "
        "fix that data and validate again.",
        table=table,
        fix=f"{verb} {table} VALIDATE CONSTRAINT {constraint};",
    )


# -- a failed revision's non-transactional steps -------------------------------------------


def leftover_warnings(revision: str, statements: Sequence[str]) -> list[SchemaWarning]:
    """What stays of `statements`: those a failed `revision` executed outside a
    transaction that committed (autocommit steps such as CREATE INDEX CONCURRENTLY or
    ALTER TYPE ... ADD VALUE). Statements with no lasting effect (SET, VACUUM, SELECT,
    ...) give none; an unparseable one gives a warning quoting its beginning."""
    found: list[SchemaWarning] = []
    for sql in statements:
        effects = effects_of(sql)
        if effects is None:
            found.append(_unparsed(revision, sql))
            continue
        found.extend(_leftover(revision, e) for e in effects)
    return merge_warnings(found)


def _stays(revision: str) -> str:
    return (
        f"It stays: revision {revision} failed, but this step ran outside the revision's "
        f"transaction and had already committed, while the version table says {revision} "
        "is not applied."
    )


def _leftover(revision: str, effect: Effect) -> SchemaWarning:
    return SchemaWarning(
        LEFTOVER_OBJECT,
        effect.name,
        f"{effect.what[:1].upper()}{effect.what[1:]}. {_stays(revision)} "
        f"A retry must cope with it: {effect.retry}",
        table=effect.table,
        fix=effect.fix,
    )


def _unparsed(revision: str, sql: str) -> SchemaWarning:
    quoted = " ".join(sql.split())[:QUOTE_CHARS]
    return SchemaWarning(
        LEFTOVER_OBJECT,
        quoted,
        f"A statement that could not be parsed was executed: {quoted}. "
        f"{_stays(revision)} Check by hand what it changed, and make the retry cope with "
        "it (IF NOT EXISTS / IF EXISTS, or undo it first).",
    )
