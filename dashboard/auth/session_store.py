"""Password-mode login sessions in PostgreSQL (`<schema>.login_sessions`), so that every
dashboard process behind a load balancer honours a login made on another one, and a
restart logs nobody out.

`PostgresSessionStore` is a Litestar `Store` (the "sessions" store of the server-side
session middleware) over the state store's engine. It is usable lazily: every call first
makes sure the dashboard's schema is there (`StateStore.ensure()`, a no-op once ready), so
it works before the app's lifespan has started the services (a mounted app whose host does
not forward lifespan events). Expiry is measured on the database's clock; expired rows are
never returned and are purged now and then.

Two economies, since the session middleware reads the session on every request and writes
it back on every response:
- renewing (`get(renew_for=…)`) and re-writing an unchanged session (`set`) only touch the
  row when its expiry would move by more than `renew_slack()` (a minute for long sessions);
- an empty session (`{}`, what the middleware writes for every anonymous request) is not
  stored: such a key is deleted instead, and reads as absent, which the middleware turns
  back into the same empty session.

When the state database cannot be reached, `SessionStoreUnavailable` (a 503) says so: a
session that cannot be checked is neither honoured nor silently dropped. (The session
middleware's own writes, made while the answer is already on its way, are tolerant of it:
see sessions.py.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from litestar.exceptions import ServiceUnavailableException
from litestar.stores.base import Store
from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dashboard.db import describe_error, is_unavailable
from dashboard.state import model as m
from dashboard.state.store import StateStore, StateUnavailable

PURGE_EVERY_S = 300.0
MAX_SLACK_S = 60.0
# What Litestar's session middleware stores for a session with nothing in it
EMPTY_SESSIONS = frozenset({b"{}", b""})


class SessionStoreUnavailable(ServiceUnavailableException):
    """The state database holding the login sessions does not answer."""


def seconds_of(value: int | timedelta | None) -> float | None:
    """`expires_in` / `renew_for` in seconds; None (or 0, as Litestar reads it) for never."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return seconds if seconds > 0 else None


def renew_slack(seconds: float) -> float:
    """How far an expiry may lag behind its renewal before the row is rewritten."""
    return min(MAX_SLACK_S, seconds / 10)


class PostgresSessionStore(Store):
    """Litestar `Store` on the dashboard's state database."""

    def __init__(
        self,
        state: StateStore,
        *,
        purge_every_s: float = PURGE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.purge_every_s = purge_every_s
        self.clock = clock
        self._purged_at: float | None = None

    # -- the Store protocol ----------------------------------------------------------------
    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        data = value.encode() if isinstance(value, str) else bytes(value)
        if data in EMPTY_SESSIONS:
            await self._forget_empty(key)
            return
        seconds = seconds_of(expires_in)
        t = m.login_sessions
        stmt = insert(t).values(
            key=key, data=data, expires_at=_expiry(seconds) if seconds is not None else None
        )
        new = stmt.excluded
        # an unchanged session whose expiry moves by less than the slack is left alone
        same_expiry: ColumnElement[bool]
        if seconds is None:
            same_expiry = t.c.expires_at.is_(None)
        else:
            same_expiry = and_(
                t.c.expires_at.is_not(None),
                t.c.expires_at.between(
                    new.expires_at - _interval(renew_slack(seconds)), new.expires_at
                ),
            )
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.key],
            set_={"data": new.data, "expires_at": new.expires_at},
            where=~and_(t.c.data == new.data, same_expiry),
        )
        purge = self._purge_due()
        async with self._begin() as conn:
            await conn.execute(stmt)
            if purge:
                await conn.execute(delete(t).where(t.c.expires_at <= func.now()))
        if purge:
            self._purged_at = self.clock()

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        t = m.login_sessions
        stmt = select(t.c.data).where(t.c.key == key, _live())
        seconds = seconds_of(renew_for)
        if seconds is not None:
            # renewed in the same statement (a data-modifying CTE), only when it matters
            renewed = (
                update(t)
                .where(
                    t.c.key == key,
                    t.c.expires_at > func.now(),
                    t.c.expires_at < _expiry(seconds) - _interval(renew_slack(seconds)),
                )
                .values(expires_at=_expiry(seconds))
                .returning(t.c.key)
                .cte("renewed")
            )
            stmt = stmt.add_cte(renewed)
        async with self._begin() as conn:
            data = (await conn.execute(stmt)).scalar_one_or_none()
        return bytes(data) if data is not None else None

    async def delete(self, key: str) -> None:
        t = m.login_sessions
        async with self._begin() as conn:
            await conn.execute(delete(t).where(t.c.key == key))

    async def delete_all(self) -> None:
        async with self._begin() as conn:
            await conn.execute(delete(m.login_sessions))

    async def exists(self, key: str) -> bool:
        t = m.login_sessions
        async with self._begin() as conn:
            found = (await conn.execute(select(t.c.key).where(t.c.key == key, _live()))).first()
        return found is not None

    async def expires_in(self, key: str) -> int | None:
        t = m.login_sessions
        left = func.extract("epoch", t.c.expires_at - func.now())
        async with self._begin() as conn:
            row = (await conn.execute(select(left).where(t.c.key == key, _live()))).first()
        if row is None or row[0] is None:
            return None
        return int(row[0])

    # -- helpers -----------------------------------------------------------------------------
    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """One transaction on the state store (its schema made sure of first); an
        unreachable database is reported as `SessionStoreUnavailable`."""
        try:
            await self.state.ensure()
            async with self.state.engine.begin() as conn:
                yield conn
        except Exception as exc:
            mapped = _unavailable(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    async def _forget_empty(self, key: str) -> None:
        """An empty session: nothing to keep; a row under its key (a session emptied in
        place) is deleted."""
        await self.delete(key)

    def _purge_due(self) -> bool:
        return self._purged_at is None or self.clock() - self._purged_at >= self.purge_every_s

    async def purge(self) -> int:
        """Delete expired sessions now; how many."""
        t = m.login_sessions
        async with self._begin() as conn:
            result = await conn.execute(delete(t).where(t.c.expires_at <= func.now()))
        self._purged_at = self.clock()
        return int(result.rowcount or 0)


def _interval(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _expiry(seconds: float) -> ColumnElement[datetime]:
    """The expiry of a session stored now for `seconds`, on the database's clock."""
    return func.now() + _interval(seconds)


def _live() -> ColumnElement[bool]:
    """Not expired (a session without an expiry never is)."""
    t = m.login_sessions
    return or_(t.c.expires_at.is_(None), t.c.expires_at > func.now())


def _unavailable(exc: Exception) -> SessionStoreUnavailable | None:
    """The 503 for an exception that says the state database cannot be reached."""
    if isinstance(exc, SessionStoreUnavailable):
        return exc
    if isinstance(exc, StateUnavailable) or is_unavailable(exc):
        reason = str(exc) if isinstance(exc, StateUnavailable) else describe_error(exc)
        return SessionStoreUnavailable(
            detail=f"the state database is unreachable, login sessions cannot be checked: {reason}"
        )
    return None
