"""Names of SQL objects as pglast's nodes give them (pure): one place for the review, the
runner and the leftover reports to turn parser nodes into names a person (or
`to_regclass`) reads back the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pglast import ast
from pglast.stream import maybe_double_quote_name


def qualified(*parts: str | None) -> str:
    """A dotted name, each part double-quoted only where PostgreSQL needs it (as
    `quote_ident` would), so `to_regclass()` reads it back as the same object."""
    return ".".join(maybe_double_quote_name(p) for p in parts if p)


def range_var(rv: ast.RangeVar | None) -> str:
    """A table as a statement names it ("?" when there is none), quoted where needed."""
    return qualified(rv.schemaname, rv.relname) if rv is not None else "?"


def dotted(strings: Iterable[Any] | None) -> str:
    """A name given as a list of String nodes (DROP/ALTER TYPE objects), quoted."""
    return qualified(*(getattr(s, "sval", None) for s in strings or ()))
