"""The statements a plan sends, per revision, learned from Alembic's offline render; and how
the static lock analysis compares with the locks a rehearsal observed.

`capture_of()` cuts the offline render of a plan (`preview.render_preview`, which notes
the output buffer's position before and after each revision's migration function) into
each revision's statements: the text written in between is that revision's; everything else (BEGIN/COMMIT around each
revision, CREATE TABLE alembic_version, the version-table UPDATE/INSERT/DELETE) is
Alembic's bookkeeping and belongs to no revision. Statements are cut with PostgreSQL's own
parser (`locks._statements`), transaction control is dropped, and a statement between an
autocommit block's `COMMIT;` and `BEGIN;` is marked as not in a transaction.

`lock_disagreements()` is pure: the plain-words differences between what `locks.analyze`
predicted for one statement and the locks PostgreSQL granted for it in a rehearsal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from alembic.script import ScriptDirectory
from pglast import ast
from pglast.enums import TransactionStmtKind as TK

from dashboard.migrations.plan import Plan
from dashboard.migrations.preview import Preview, RenderedSpan, render_preview
from dashboard.review.fingerprints import fingerprint
from dashboard.review.lock_table import UNKNOWN_RELATION, strongest
from dashboard.review.locks import _statements
from dashboard.review.model import (
    LOCK_MODES,
    ROW_EXCLUSIVE,
    UNKNOWN,
    Capture,
    CapturedStatement,
    RelationLock,
    RevisionCapture,
    StatementFacts,
)
from dashboard.targets import Target

__all__ = ["OFFLINE_NOTE", "lock_disagreements", "offline_capture", "one_line", "source_file"]

OFFLINE_NOTE = (
    "The statements come from Alembic's offline (--sql) render of the revisions, not from a "
    "rehearsal: what a revision decides at run time from data it reads is not in them."
)

_OPENS = (TK.TRANS_STMT_BEGIN, TK.TRANS_STMT_START)
_CLOSES = (TK.TRANS_STMT_COMMIT, TK.TRANS_STMT_ROLLBACK, TK.TRANS_STMT_PREPARE)


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (whitespace collapsed), cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def source_file(sd: ScriptDirectory, revision: str) -> str | None:
    """The path of a revision's script, when the scripts still have it."""
    try:
        script = sd.get_revision(revision)
    except Exception:  # an unknown revision simply has no file
        return None
    return str(script.path) if script is not None else None


# --- offline capture ---------------------------------------------------------------------


def _cut(text: str, in_block: bool) -> tuple[list[tuple[str, bool]], bool]:
    """The statements of `text` with whether each runs inside a transaction block, given
    the block state at the start of `text`; and the state at its end. Transaction control
    (BEGIN, COMMIT, ...) only moves the state and is not returned."""
    out: list[tuple[str, bool]] = []
    for sql, node, _error in _statements(text):
        if isinstance(node, ast.TransactionStmt):
            if node.kind in _OPENS:
                in_block = True
            elif node.kind in _CLOSES:
                in_block = bool(node.chain)
            continue
        out.append((sql, in_block))
    return out, in_block


def _offline_reason(verb: str, error: str) -> str:
    return (
        f"its {verb}() reads from the database while it runs ({error}); offline rendering "
        "stopped there, so what it sends after that point is decided at run time from the "
        "data it reads"
    )


def offline_capture(sd: ScriptDirectory, plan: Plan, target: Target) -> Capture:
    """The plan's statements per revision, from Alembic's offline render (no database)."""
    return capture_of(render_preview(sd, plan, target), sd)


def capture_of(preview: Preview, sd: ScriptDirectory) -> Capture:
    """The plan's statements per revision, cut from an offline render's text by the span
    each revision's migration function wrote (`Preview.spans`).

    A revision whose migration function raised while rendering (it reads data through
    `op.get_bind()`, which returns nothing offline) is `data_dependent`; the statements it
    rendered before that point are kept."""
    return Capture(
        exact=False,
        source="offline",
        revisions=tuple(_attribute(preview.sql, preview.spans, preview.plan, sd)),
        note=OFFLINE_NOTE,
    )


def _attribute(
    text: str, spans: Iterable[RenderedSpan], plan: Plan, sd: ScriptDirectory
) -> Iterator[RevisionCapture]:
    by_revision = {s.revision: s for s in spans}
    in_block = False
    pos = 0
    index = 0
    for step in plan.steps:
        span = by_revision.get(step.revision)
        statements: list[CapturedStatement] = []
        if span is not None:
            _bookkeeping, in_block = _cut(text[pos : span.start], in_block)
            found, in_block = _cut(text[span.start : span.end], in_block)
            pos = span.end
            for sql, in_tx in found:
                statements.append(
                    CapturedStatement(
                        revision=step.revision,
                        index=index,
                        sql=sql,
                        fingerprint=fingerprint(sql),
                        in_transaction=in_tx,
                    )
                )
                index += 1
        error = span.error if span is not None else None
        verb = "upgrade" if step.is_upgrade else "downgrade"
        yield RevisionCapture(
            revision=step.revision,
            statements=tuple(statements),
            data_dependent=error is not None,
            data_reason=_offline_reason(verb, error) if error is not None else None,
            source_file=source_file(sd, step.revision),
        )


# --- static analysis against a rehearsal's observed locks --------------------------------

_RANK = {mode: i for i, mode in enumerate(LOCK_MODES)}
# An observed lock on a relation the analysis did not name is reported only from this mode
# up: weaker ones (a foreign key check's RowShareLock on the referenced table, a view's
# AccessShareLock on its base tables) block no reader or writer.
_UNNAMED_FROM = _RANK[ROW_EXCLUSIVE] + 1


def _split(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def _same(static: str, observed: str) -> bool:
    """ "x" matches any schema's x; "public.x" matches "x" and "public.x"."""
    s_schema, s_table = _split(static)
    o_schema, o_table = _split(observed)
    if s_table != o_table:
        return False
    return s_schema is None or o_schema is None or s_schema == o_schema


def _strongest(modes: Iterable[str]) -> str | None:
    known = [m for m in modes if m in _RANK]
    return strongest(known) if known else None


def lock_disagreements(static: StatementFacts, observed: tuple[RelationLock, ...]) -> list[str]:
    """Where `locks.analyze`'s prediction for one statement and the locks PostgreSQL granted
    for it in a rehearsal (`CapturedStatement.observed_locks`) disagree, in plain words.

    - A named relation observed only in weaker modes than predicted. A predicted relation
      with no new lock observed is not reported: an earlier statement of the same
      transaction may already hold it (only new locks are observed), or the relation is an
      index whose table PostgreSQL locks instead.
    - An observed lock stronger than predicted for its relation; for a relation the
      analysis did not name (nor "?", an unknown relation), only a mode that blocks writers
      or DDL (ShareUpdateExclusiveLock and up).
    An "unknown" prediction (unparsed text) agrees with anything.
    """
    predicted: dict[str, list[str]] = {}
    wildcard: list[str] = []
    for lock in static.locks:
        if lock.mode == UNKNOWN:
            return []
        if lock.relation == UNKNOWN_RELATION:
            wildcard.append(lock.mode)
        else:
            predicted.setdefault(lock.relation, []).append(lock.mode)
    seen: dict[str, list[str]] = {}
    for lock in observed:
        seen.setdefault(lock.relation, []).append(lock.mode)
    out: list[str] = []
    for relation, modes in predicted.items():
        want = _strongest(modes)
        got = _strongest(m for name, ms in seen.items() if _same(relation, name) for m in ms)
        if want is None or got is None:
            continue
        if _RANK[got] < _RANK[want]:
            out.append(f"{relation}: the analysis predicted {want}, but PostgreSQL took only {got}")
    for name, modes in seen.items():
        got = _strongest(modes)
        if got is None:
            continue
        mine = [m for relation, ms in predicted.items() if _same(relation, name) for m in ms]
        want = _strongest(mine or wildcard)
        if want is None:
            if _RANK[got] >= _UNNAMED_FROM:
                out.append(
                    f"{name}: PostgreSQL took {got}, a relation the analysis did not predict "
                    "a lock on"
                )
        elif _RANK[got] > _RANK[want]:
            out.append(f"{name}: PostgreSQL took {got}, stronger than the predicted {want}")
    return out
