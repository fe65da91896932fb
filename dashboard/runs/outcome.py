"""Pure decisions about how a run ended: the failure in words, the table a statement
touched (read with PostgreSQL's own parser, pglast), the blocker report, the finish
status and message, and the expiry message. No I/O: unit-tested without a database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError

from dashboard.db import is_unavailable
from dashboard.migrations.apply import DatabaseMoved, EnvPyIgnoresConnection
from dashboard.review.gate import StatementRefused
from dashboard.review.sql_names import dotted, range_var
from dashboard.runs.progress import RunCancelled, one_line
from dashboard.state import model as sm

LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class Failure:
    type: str
    sqlstate: str | None
    server_error: str
    statement: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "sqlstate": self.sqlstate,
            "server_error": self.server_error,
            "statement": self.statement,
        }


def _strip_driver_prefix(text: str) -> str:
    """SQLAlchemy writes "(dialect.ExcClass) <class 'asyncpg...'>: message"."""
    if text.startswith("(") and ")" in text:
        text = text[text.index(")") + 1 :].lstrip()
    if text.startswith("<class '") and "'>:" in text:
        text = text[text.index("'>:") + 3 :].lstrip()
    return text


def describe_failure(exc: BaseException) -> Failure:
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None) if orig is not None else None
    sqlstate = None
    for candidate in (cause, orig, exc):
        sqlstate = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if sqlstate:
            break
    source = cause or orig or exc
    text = _strip_driver_prefix(str(source).strip())
    return Failure(
        type=type(source).__name__,
        sqlstate=sqlstate,
        server_error=one_line(text.splitlines()[0] if text else type(source).__name__),
        statement=one_line(getattr(exc, "statement", None) or "", 2000) or None,
    )


def relation_of(statement: str | None) -> str | None:
    """The first table a statement names (ALTER/LOCK/DROP/CREATE INDEX/DML), or None."""
    if not statement:
        return None
    try:
        parsed = parse_sql(statement)
    except ParseError:
        return None
    for raw in parsed:
        node = raw.stmt
        rel = getattr(node, "relation", None)
        if isinstance(rel, ast.RangeVar):
            return range_var(rel)
        rels = getattr(node, "relations", None)
        if rels:
            first = rels[0]
            if isinstance(first, ast.RangeVar):
                return range_var(first)
        if isinstance(node, ast.DropStmt) and node.objects:
            names = node.objects[0]
            if isinstance(names, tuple | list):
                return dotted(n for n in names if isinstance(n, ast.String))
    return None


@dataclass(frozen=True)
class BlockerReport:
    """Who held what the migration waited for. `blockers` rows carry `root`: true for a
    session holding the lock (named), false for a waiter queued ahead (only counted)."""

    relation: str | None
    blockers: list[dict[str, Any]]
    mode: str | None = None

    @property
    def roots(self) -> list[dict[str, Any]]:
        roots = [b for b in self.blockers if b.get("root") is not False]
        return roots or list(self.blockers)

    @property
    def text(self) -> str:
        parts = []
        if self.relation:
            want = f" for {self.mode}" if self.mode else ""
            parts.append(f"Lock wait{want} on table {self.relation}")
        for b in self.roots[:3]:
            q = one_line(str(b.get("query") or ""), 200)
            app = b.get("application_name")
            parts.append(
                f"blocked by backend pid {b.get('pid')} ({b.get('state') or 'unknown state'}"
                f"{', ' + str(app) if app else ''}){': ' + q if q else ''}"
            )
        ahead = sum(1 for b in self.blockers if b.get("root") is False)
        if ahead:
            parts.append(f"{ahead} waiting session(s) in between (queued ahead, holding nothing)")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        roots = self.roots
        return {
            "relation": self.relation,
            "mode": self.mode,
            "blockers": self.blockers,
            "root_pids": [b.get("pid") for b in roots],
            "locks_url": f"/locks#root-{roots[0].get('pid')}" if roots else "/locks",
            "text": self.text,
        }


@dataclass(frozen=True)
class RetriesExhausted:
    """A statement used all its lock attempts."""

    attempts: int
    reason: str  # retries.LOCK_TIMEOUT / PILEUP / DEADLOCK: how the last attempt ended
    lock_timeout_ms: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        s = self.summary
        cancels = int(s.get("watchdog_cancels") or 0)
        timeouts = int(s.get("lock_timeouts") or 0)
        how = []
        if timeouts:
            how.append(f"{timeouts} timed out after lock_timeout {self.lock_timeout_ms} ms")
        if cancels:
            how.append(
                f"the pile-up watchdog cancelled {cancels} because sessions queued behind it"
            )
        if s.get("deadlocks"):
            how.append(f"{s['deadlocks']} lost a deadlock")
        waited = s.get("waited_s")
        over = f" over {float(waited):.1f} s" if waited else ""
        return f"could not get its lock in {self.attempts} attempt(s){over}" + (
            f" ({'; '.join(how)})" if how else ""
        )


def is_unavailable_error(error: BaseException | None) -> bool:
    """The run's connection to the database was lost (cut, refused, server shut down)."""
    return error is not None and is_unavailable(error)


def is_lock_timeout(error: BaseException | None) -> bool:
    return error is not None and describe_failure(error).sqlstate == LOCK_NOT_AVAILABLE


@dataclass(frozen=True)
class FinishFacts:
    """Everything the finish decision needs, gathered by the executor."""

    error: BaseException | None
    expected: Sequence[str]  # the plan's target heads
    confirm_value: str
    verified: list[str] | None  # the version table re-read on a fresh connection
    verify_error: str | None
    left_in_transaction: bool
    cancel_requested_by: str | None
    current_revision: str | None
    current_statement: str | None
    blocker: BlockerReport | None = None
    exhausted: RetriesExhausted | None = None
    warnings: tuple[str, ...] = ()  # what the run left behind (never a clean success)


@dataclass(frozen=True)
class Finish:
    status: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


def _heads(verified: Sequence[str] | None) -> str:
    return ", ".join(verified) if verified else "base (nothing applied)"


def _left_at(verified: Sequence[str] | None, verify_error: str | None) -> str:
    """Where the run left the database, as proven on a fresh connection (or why not)."""
    if verified is None:
        return (
            "Where the database stands could not be confirmed: the version table could not "
            f"be re-read on a fresh connection ({verify_error})"
        )
    return f"Database left at {_heads(verified)} (verified on a fresh connection)"


def decide_finish(f: FinishFacts) -> Finish:
    """The run's final status and the sentence a person reads."""
    at = _heads(f.verified)
    if f.error is None and f.verified == list(f.expected):
        message = f"database now at {at}, confirmed on a fresh connection"
        if f.warnings:
            message += (
                f" — but not clean: {len(f.warnings)} thing(s) left that need a person: "
                f"{f.warnings[0]}"
            )
        return Finish(sm.SUCCEEDED, message)
    if f.error is None:
        if f.verified is None:
            message = (
                "proof of commit failed: the version table could not be re-read on a fresh "
                f"connection ({f.verify_error})"
            )
        else:
            message = (
                f"proof of commit failed: Alembic reported success, but on a fresh "
                f"connection the version table reads {at}, not {f.confirm_value}"
            )
        if f.left_in_transaction:
            message += (
                ". The migration connection was still inside a transaction Alembic did "
                "not own (something executed on it before context.configure()), so "
                "Alembic never committed; that transaction was rolled back"
            )
        detail: dict[str, Any] = {
            "expected": list(f.expected),
            "verified": f.verified,
            "left_in_transaction": f.left_in_transaction,
        }
        return Finish(sm.FAILED, message, detail)
    failure = describe_failure(f.error)
    if isinstance(f.error, RunCancelled) or f.cancel_requested_by:
        where = f" during revision {f.current_revision}" if f.current_revision else ""
        left = _left_at(f.verified, f.verify_error)
        message = f"cancelled by {f.cancel_requested_by}{where}; {left[0].lower()}{left[1:]}"
        return Finish(sm.CANCELLED, message, {"revision": f.current_revision, **failure.to_json()})
    detail = failure.to_json()
    detail["revision"] = f.current_revision
    if isinstance(f.error, StatementRefused):
        refused = f.error.refused
        detail.update(
            revision=refused.revision,
            statement=one_line(refused.sql, 2000),
            refused={
                "revision": refused.revision,
                "statement": one_line(refused.sql, 2000),
                "fingerprint": refused.fingerprint,
            },
        )
        return Finish(
            sm.FAILED,
            f"{refused.message}. {_left_at(f.verified, f.verify_error)}",
            detail,
        )
    statement = failure.statement or one_line(f.current_statement or "", 2000) or None
    if isinstance(f.error, DatabaseMoved | EnvPyIgnoresConnection):
        statement = None
    detail["statement"] = statement
    rev = f"revision {f.current_revision}" if f.current_revision else "the run"
    if is_unavailable_error(f.error):
        detail["connection_lost"] = True
        where = f"during revision {f.current_revision}" if f.current_revision else "during the run"
        message = (
            f"the connection to the database was lost {where} ({failure.server_error}); "
            "the dashboard process kept running and recorded this once the database answered "
            "again. An uncommitted revision was rolled back by the server"
        )
        if statement:
            message += f" — it was running: {statement[:300]}"
        return Finish(sm.FAILED, f"{message}. {_left_at(f.verified, f.verify_error)}", detail)
    if f.exhausted is not None:
        detail["retries"] = {**f.exhausted.summary, "exhausted": True}
        message = f"{rev} {f.exhausted.text}"
    else:
        message = f"{rev} failed: {failure.server_error}"
    if statement:
        message += f" — while running: {statement[:300]}"
    if f.blocker is not None:
        detail["lock"] = f.blocker.to_json()
        if f.blocker.text:
            message += f". {f.blocker.text}"
    message += f". {_left_at(f.verified, f.verify_error)}"
    return Finish(sm.FAILED, message, detail)


def expiry_message(approved_by: str | None, expires_at: datetime, ttl_minutes: int) -> str:
    """Why a request (or an approval not executed in time) expired."""
    by = f"{expires_at:%Y-%m-%d %H:%M:%S %Z}"
    if approved_by:
        return (
            f"approval expired: approved by {approved_by} but not executed within "
            f"{ttl_minutes} min (by {by}); nothing ran. Request the run again."
        )
    return (
        f"request expired: not approved within {ttl_minutes} min (by {by}); nothing ran. "
        "Request the run again."
    )


def interrupted_message(
    owner: str | None,
    verified: Sequence[str],
    terminated: bool,
    server_restarted_at: datetime | None = None,
) -> str:
    """Why a run nobody is finishing was ended by recovery."""
    if server_restarted_at is not None:
        why = (
            f"the database server restarted at {server_restarted_at:%Y-%m-%d %H:%M:%S %Z} "
            f"while the run was in progress, cutting its connections (run by {owner or 'unknown'})"
        )
    else:
        why = (
            f"the dashboard process running it ({owner or 'unknown'}) stopped reporting and its "
            "lock connection is gone: the process stopped, or lost its connection to the database"
        )
    return f"interrupted: {why}; database verified at {_heads(verified)}" + (
        "; its orphaned migration backend was terminated" if terminated else ""
    )
