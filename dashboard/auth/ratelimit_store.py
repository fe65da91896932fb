"""Failed logins in PostgreSQL (`<schema>.login_failures`): the `FailureLog` that lets every
dashboard process count the same failures (ratelimit.LoginLimiter decides).

All the SQL of that table: one row per failure and key (`"u:<user>"`, `"a:<address>"`),
read back as ages measured on the database's clock (processes on several hosts need not
agree on the time), deleted for a user on success, and rows older than the window
purged now and then. SQLAlchemy Core on the schema-less table of dashboard/state/model.py;
the state store's engine applies the schema.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import delete, func, insert, select

from dashboard.state import model as m
from dashboard.state.store import StateStore

PURGE_EVERY_S = 60.0


class SharedFailureLog:
    """`FailureLog` on the state store's engine (its schema is created lazily)."""

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

    async def recent_ages(
        self, keys: Sequence[str], max_failures: int, window_s: float
    ) -> dict[str, list[float]]:
        await self.state.ensure()
        t = m.login_failures
        age = func.extract("epoch", func.now() - t.c.at).label("age")
        newest = (
            func.row_number().over(partition_by=t.c.key, order_by=t.c.at.desc()).label("newest")
        )
        recent = (
            select(t.c.key, age, newest)
            .where(t.c.key.in_(list(keys)), t.c.at > func.now() - timedelta(seconds=window_s))
            .subquery()
        )
        stmt = select(recent.c.key, recent.c.age).where(recent.c.newest <= max_failures)
        ages: dict[str, list[float]] = {}
        async with self.state.connect() as conn:
            for key, seconds in (await conn.execute(stmt)).all():
                ages.setdefault(str(key), []).append(float(seconds))
        return ages

    async def record(self, keys: Sequence[str], window_s: float) -> None:
        await self.state.ensure()
        t = m.login_failures
        purge = self._purge_due()
        async with self.state.begin() as conn:
            await conn.execute(insert(t).values([{"key": key, "at": func.now()} for key in keys]))
            if purge:
                await conn.execute(
                    delete(t).where(t.c.at < func.now() - timedelta(seconds=window_s))
                )
        if purge:
            self._purged_at = self.clock()

    async def forget(self, key: str) -> None:
        await self.state.ensure()
        t = m.login_failures
        async with self.state.begin() as conn:
            await conn.execute(delete(t).where(t.c.key == key))

    def _purge_due(self) -> bool:
        return self._purged_at is None or self.clock() - self._purged_at >= self.purge_every_s
