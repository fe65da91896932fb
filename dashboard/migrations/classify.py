"""Pure logic for revision status: state classification and irreversibility detection."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable

UP_TO_DATE = "up_to_date"
PENDING = "pending"
AHEAD = "ahead"
DIVERGED = "diverged"
UNINITIALIZED = "uninitialized"
STATES = (UP_TO_DATE, PENDING, AHEAD, DIVERGED, UNINITIALIZED)


def classify(
    *,
    has_version_table: bool,
    current: Iterable[str],
    heads: Iterable[str],
    known: Callable[[str], bool],
    is_ancestor: Callable[[str, str], bool],
) -> tuple[str, str]:
    """Return (state, explanation) for the database's current revisions against the scripts.

    `is_ancestor(a, b)` is true when revision `a` is a strict ancestor of `b`.
    """
    cur = list(current)
    hds = list(heads)
    if not has_version_table:
        return UNINITIALIZED, (
            "The version table does not exist: this database has never been migrated "
            "(or the version table name/schema is configured differently)."
        )
    unknown = [r for r in cur if not known(r)]
    if unknown:
        return AHEAD, (
            f"The database is at revision {', '.join(unknown)}, which the migration scripts "
            "do not contain. It was probably migrated from a newer checkout, or a revision "
            "file was removed. Nothing can be planned until the scripts include it."
        )
    overlapping = [(a, b) for a in cur for b in cur if a != b and is_ancestor(a, b)]
    if overlapping:
        a, b = overlapping[0]
        return DIVERGED, (
            f"The version table is inconsistent: it records both {a} and its descendant {b}. "
            "Alembic cannot plan from here until one row is removed."
        )
    if set(cur) == set(hds) and cur:
        return UP_TO_DATE, "The database is at the head revision."
    if not hds:
        if not cur:
            return UP_TO_DATE, "There are no migration scripts and nothing is applied."
    if not cur:
        return PENDING, "The version table is empty: every revision is pending."
    return PENDING, "Revisions exist that the database has not applied yet."


def parse_source(source: str) -> tuple[ast.Module | None, str | None]:
    """Parse a revision file's text: (tree, None), or (None, why it does not parse)."""
    try:
        return ast.parse(source), None
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return None, f"file does not parse: {exc.msg}{where}"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return None, f"file does not parse: {type(exc).__name__}: {exc}"


def declared_revision(tree: ast.Module) -> str | None:
    """The literal `revision = "..."` a revision file declares at top level (the last one
    wins, as it would when the module runs), or None when there is none or it is computed."""
    found: str | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value: ast.expr | None = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names, value = [node.target.id], node.value
        else:
            continue
        if "revision" not in names:
            continue
        found = (
            value.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str)
            else None
        )
    return found


def downgrade_verdict(source: str) -> str | None:
    """Why a revision's downgrade cannot undo it, or None when it looks reversible.

    A `downgrade()` whose body does nothing (only `pass`, `...` or a docstring), raises
    unconditionally at top level, or is missing altogether, is irreversible; so is a file
    that does not parse.
    """
    tree, error = parse_source(source)
    if tree is None:
        return error
    return downgrade_verdict_of(tree)


def downgrade_verdict_of(tree: ast.Module) -> str | None:
    """`downgrade_verdict` on an already parsed file."""
    defined = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "downgrade"
    ]
    if not defined:
        return "no downgrade() function"
    func = defined[-1]  # a later definition replaces an earlier one when the module runs
    body = list(func.body)
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    meaningful = [
        s
        for s in body
        if not isinstance(s, ast.Pass)
        and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]
    if not meaningful:
        return "downgrade() does nothing"
    for stmt in meaningful:
        if isinstance(stmt, ast.Raise):
            raised = stmt.exc
            name = ""
            if isinstance(raised, ast.Call) and isinstance(raised.func, ast.Name):
                name = raised.func.id
            elif isinstance(raised, ast.Name):
                name = raised.id
            return f"downgrade() raises {name}".rstrip() if name else "downgrade() raises"
    return None
