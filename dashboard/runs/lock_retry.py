"""Lock retries on the migration connection (sync, inside `AsyncConnection.run_sync`).

Where a statement runs decides how it is retried:
- **Inside a revision's transaction** (the common case): a savepoint is taken where the
  revision's migration function starts. A statement that fails for its lock (lock_timeout,
  the pile-up watchdog's cancel, a deadlock) rolls the revision back to that savepoint,
  which releases every lock the revision took, waits out a backoff, and runs the
  revision's function again. Nothing the revision locked is held while it backs off, so
  no session queues behind a migration that is only waiting.
- **Outside a transaction** (an `autocommit_block`: `CREATE INDEX CONCURRENTLY`,
  `ALTER TYPE ... ADD VALUE`): the statement itself is retried; it was its own
  transaction. A concurrent index build that failed part-way has left an INVALID index:
  it is not retried (the run fails and reports the leftover).
- **In a transaction without the revision's savepoint** (after an autocommit block in the
  same revision): a savepoint around the one statement. Alembic's version-table update
  between revisions is sent as is.

The pure decisions (what is retryable, the backoff) are in `retries.py`; the watchdog
that cancels a lock wait when sessions pile up behind it is in `watchdog.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.util import await_

from dashboard.review.sql_names import qualified
from dashboard.runs.progress import LiveRun
from dashboard.runs.retries import (
    RetryLedger,
    backoff_s,
    concurrent_build,
    describe_reason,
    retry_reason,
)

SAVEPOINT = "dashboard_lock_attempt"
SLEEP_SLICE_S = 0.1
# The INVALID index a failed concurrent build left, as PostgreSQL names it (quoted).
INVALID_INDEX = (
    "SELECT i.indexrelid::regclass::text FROM pg_index i "
    "WHERE i.indexrelid = to_regclass($1) AND NOT i.indisvalid"
)


@dataclass(frozen=True)
class LockFailure:
    """A failed lock attempt, as the retrier saw it."""

    reason: str
    sqlstate: str | None
    statement: str
    revision: str | None


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


class LockRetrier:
    """Installs itself on the migration engine; `run_step` wraps each revision."""

    def __init__(self, live: LiveRun, ledger: RetryLedger, *, lock_timeout_ms: int) -> None:
        self.live = live
        self.ledger = ledger
        self.lock_timeout_ms = lock_timeout_ms
        self.revision_savepoint: Any = None  # the NestedTransaction of the running revision
        self.pending: LockFailure | None = None  # a retryable failure inside that savepoint

    # -- engine events ---------------------------------------------------------------
    def install(self, engine: Engine) -> None:
        event.listen(engine, "do_execute", self._do_execute)
        event.listen(engine, "do_execute_no_params", self._do_execute_no_params)
        event.listen(engine, "do_executemany", self._do_executemany)
        event.listen(engine, "handle_error", self._handle_error)

    def remove(self, engine: Engine) -> None:
        event.remove(engine, "do_execute", self._do_execute)
        event.remove(engine, "do_execute_no_params", self._do_execute_no_params)
        event.remove(engine, "do_executemany", self._do_executemany)
        event.remove(engine, "handle_error", self._handle_error)

    def _do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any) -> Any:
        return self._execute(cursor, statement, lambda: cursor.execute(statement, parameters))

    def _do_execute_no_params(self, cursor: Any, statement: str, context: Any) -> Any:
        return self._execute(cursor, statement, lambda: cursor.execute(statement))

    def _do_executemany(self, cursor: Any, statement: str, parameters: Any, context: Any) -> Any:
        return self._execute(cursor, statement, lambda: cursor.executemany(statement, parameters))

    def _handle_error(self, ctx: ExceptionContext) -> None:
        """A statement failed inside the revision's savepoint: note it if a retry may help
        (the revision's function may catch the error; the retry happens anyway)."""
        if self.revision_savepoint is None or self.live.internal:
            return
        reason = retry_reason(
            _sqlstate(ctx.original_exception), watchdog_cancelled=self._take_watchdog_flag()
        )
        if reason is not None and self.pending is None:
            self.pending = LockFailure(
                reason,
                _sqlstate(ctx.original_exception),
                ctx.statement or "",
                self.live.in_revision,
            )

    # -- one statement -----------------------------------------------------------------
    def _execute(self, cursor: Any, statement: str, send: Callable[[], None]) -> Any:
        live = self.live
        adapt = getattr(cursor, "_adapt_connection", None)
        autocommit = bool(getattr(adapt, "autocommit", False))
        if adapt is None:
            return None  # not the asyncpg adapter: SQLAlchemy sends it, without retries
        if live.internal or (self.revision_savepoint is not None and not autocommit):
            # inside the revision's savepoint: a lock failure rolls the revision back
            self._send(send)
            return True
        if not autocommit and live.in_revision is None:
            # Alembic's own bookkeeping (the version table) between revisions: not worth
            # two more round trips per revision; a lock failure there fails the run
            self._send(send)
            return True
        in_tx = not autocommit
        key = (live.in_revision, statement)
        while True:
            if in_tx:
                self._raw(adapt, f"SAVEPOINT {SAVEPOINT}")
            try:
                self._send(send)
            except Exception as exc:
                reason = retry_reason(_sqlstate(exc), watchdog_cancelled=self._take_watchdog_flag())
                if reason is None:
                    raise
                leftover: str | None = None
                if in_tx:
                    self._raw(adapt, f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
                else:
                    may_retry, leftover = self._invalid_leftover(adapt, key, statement)
                    if not may_retry:
                        raise
                self._back_off(
                    key,
                    LockFailure(reason, _sqlstate(exc), statement, live.in_revision),
                    exc,
                    then=functools.partial(self._drop_index, adapt, leftover, statement)
                    if leftover
                    else None,
                )
                continue
            if in_tx:
                self._raw(adapt, f"RELEASE SAVEPOINT {SAVEPOINT}")
            elif live.in_revision is not None:
                # committed at once: it stays even if its revision fails later
                live.committed_outside.append((live.in_revision, statement))
            return True

    def _send(self, send: Callable[[], None]) -> None:
        live = self.live
        live.attempt_seq += 1
        live.watchdog_cancelled = False
        live.in_flight_since = live.attempt_started = time.monotonic()
        try:
            send()
        finally:
            live.in_flight_since = None

    def _take_watchdog_flag(self) -> bool:
        flag = self.live.watchdog_cancelled
        self.live.watchdog_cancelled = False
        return flag

    @staticmethod
    def _raw(adapt: Any, sql: str) -> None:
        """A statement of the retrier's own (savepoints): on the same DBAPI connection,
        through its own cursor, unseen by the statement gate and the run's log."""
        cur = adapt.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()

    def _invalid_leftover(
        self, adapt: Any, key: tuple[str | None, str], statement: str
    ) -> tuple[bool, str | None]:
        """(may it be retried, the INVALID index its failed attempt left behind).

        A concurrent index build that failed part-way (its wait for old transactions timed
        out, or the watchdog cancelled it) leaves an INVALID index, which `IF NOT EXISTS`
        would then skip silently. The failed attempt created it (had it existed before, the
        statement would have failed for that or skipped it), so it is dropped before the
        next attempt. On the last attempt, or when PostgreSQL picked the name, it is left
        in place and the run fails; the run's warnings report it."""
        build = concurrent_build(statement)
        if build is None:
            return True, None
        schema, name = build
        if not name or self.ledger.is_last(key):
            return False, None
        cur = adapt.cursor()
        try:
            cur.execute(INVALID_INDEX, (qualified(schema, name),))
            row = cur.fetchone()
        finally:
            cur.close()
        return True, (str(row[0]) if row is not None else None)

    def _drop_index(self, adapt: Any, index: str, statement: str) -> None:
        """DROP INDEX CONCURRENTLY: takes no lock that readers or writers wait for."""
        self._raw(adapt, f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
        self.live.log(
            "invalid_index_dropped",
            f"the failed attempt left INVALID index {index}; dropped it "
            "(DROP INDEX CONCURRENTLY) before the next attempt",
            revision=self.live.in_revision,
            statement=statement,
        )

    # -- one revision ------------------------------------------------------------------
    def run_step(self, conn: Connection, call: Callable[[], Any]) -> Any:
        """Run a revision's migration function from a savepoint; rerun it after a lock
        failure (the savepoint rolled back, then a backoff)."""
        while True:
            nested = None
            if conn.in_transaction():
                with self._internal():
                    nested = conn.begin_nested()
            self.revision_savepoint, self.pending = nested, None
            try:
                result = call()
            except Exception as exc:
                failure, nested = self.pending, self.revision_savepoint
                self.revision_savepoint, self.pending = None, None
                if failure is None or nested is None or not nested.is_active:
                    raise
                with self._internal():
                    nested.rollback()
                self._back_off((failure.revision, failure.statement), failure, exc)
                continue
            failure, nested = self.pending, self.revision_savepoint
            self.revision_savepoint, self.pending = None, None
            if failure is not None and nested is not None and nested.is_active:
                # the revision caught the failure and returned: its transaction is aborted
                with self._internal():
                    nested.rollback()
                self._back_off(
                    (failure.revision, failure.statement), failure, RuntimeError(failure.reason)
                )
                continue
            if nested is not None and nested.is_active:
                with self._internal():
                    nested.commit()
            return result

    def leaving_transaction(self) -> None:
        """The revision enters an autocommit block (Alembic commits its transaction first):
        release its savepoint; from here on its statements are retried one by one."""
        nested, self.revision_savepoint = self.revision_savepoint, None
        if nested is not None and nested.is_active:
            with self._internal():
                nested.commit()

    @contextlib.contextmanager
    def _internal(self) -> Iterator[None]:
        live = self.live
        before, live.internal = live.internal, True
        try:
            yield
        finally:
            live.internal = before

    # -- backoff -----------------------------------------------------------------------
    def _back_off(
        self,
        key: tuple[str | None, str],
        failure: LockFailure,
        error: BaseException,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Count the failed attempt; raise `error` when the statement has used its
        attempts, else log it, run `then` (a clean-up before the next attempt) and sleep
        the backoff (a cancel request ends the sleep)."""
        live, ledger = self.live, self.ledger
        used = ledger.failed(key, failure.reason)
        if live.attempt_started:
            ledger.waited_s += time.monotonic() - live.attempt_started
        why = describe_reason(failure.reason, self.lock_timeout_ms)
        who = live.blocker_phrase()
        if ledger.exhausted(key):
            live.exhausted = (used, failure.reason)
            live.log(
                "lock_retries_exhausted",
                f"attempt {used} of {ledger.limit} failed ({why}){who}; no attempts left",
                revision=failure.revision,
                statement=failure.statement,
            )
            raise error
        delay = backoff_s(used)
        live.log(
            "lock_retry",
            f"attempt {used} of {ledger.limit} failed ({why}){who}; retrying in {delay:.1f} s",
            revision=failure.revision,
            statement=failure.statement,
        )
        ledger.retried()
        if then is not None:
            then()
        started = time.monotonic()
        live.backoff_until = started + delay
        try:
            while (left := live.backoff_until - time.monotonic()) > 0:
                live.check_cancel()
                await_(asyncio.sleep(min(SLEEP_SLICE_S, left)))
            live.check_cancel()
        finally:
            live.backoff_until = 0.0
            ledger.waited_s += time.monotonic() - started
