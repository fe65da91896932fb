"""A load simulator for the demo: a recurring lock pile-up and bursts of pool pressure,
both through the observed application engine so the Locks and Pool pages have real
things to show. Bounded: every phase has a fixed duration and the loop stops on cancel."""

from __future__ import annotations

import asyncio
import logging
import random

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.background import cancel_and_wait

log = logging.getLogger(__name__)


class LoadSimulator:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cycle_s: float = 40.0,
        hold_s: float = 15.0,
        burst_tasks: int = 14,
        burst_hold_s: float = 4.0,
    ) -> None:
        self.engine = engine
        self.cycle_s = cycle_s
        self.hold_s = hold_s
        self.burst_tasks = burst_tasks
        self.burst_hold_s = burst_hold_s
        self._task: asyncio.Task[None] | None = None
        self.cycles = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="demo-load-simulator")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(2.0)
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self.lock_pileup()
                await asyncio.sleep(3.0)
                await self.pool_burst()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the demo keeps going whatever happens
                log.info("simulator cycle ended early: %s", exc)
            self.cycles += 1
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(1.0, self.cycle_s - elapsed))

    async def _holder(self, ready: asyncio.Event) -> None:
        """Root blocker: takes a row lock, then sits idle in transaction."""
        async with self.engine.connect() as conn:
            await conn.execute(
                text("UPDATE customers SET name = name WHERE id = 1 /* checkout: hold row */")
            )
            ready.set()
            await asyncio.sleep(self.hold_s)
            await conn.rollback()

    async def _waiter(self, sql: str) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SET LOCAL lock_timeout = '30s'"))
            await conn.execute(text(sql))
            await conn.rollback()

    async def lock_pileup(self) -> None:
        """A holds a row; B waits for the row; C queues for ACCESS EXCLUSIVE on the table;
        D and E (plain reads) queue behind C. One root, blast radius 4."""
        ready = asyncio.Event()
        holder = asyncio.create_task(self._holder(ready))
        await asyncio.wait_for(ready.wait(), timeout=10)
        waiters = [
            asyncio.create_task(self._waiter("UPDATE customers SET name = 'Changed' WHERE id = 1"))
        ]
        await asyncio.sleep(0.5)
        waiters.append(
            asyncio.create_task(self._waiter("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
        )
        await asyncio.sleep(0.5)
        for _ in range(2):
            waiters.append(asyncio.create_task(self._waiter("SELECT count(*) FROM customers")))
        results = await asyncio.gather(holder, *waiters, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.debug("pile-up session ended with %s", r)

    async def _busy(self, hold: float) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(
                text("SELECT pg_sleep(:s) /* report: monthly totals */"), {"s": hold}
            )

    async def pool_burst(self) -> None:
        """More tasks than the pool holds, each keeping a connection for a while: the pool
        fills, tasks queue for a connection, and the slowest may hit pool_timeout."""
        tasks = [
            asyncio.create_task(self._busy(self.burst_hold_s * random.uniform(0.7, 1.3)))
            for _ in range(self.burst_tasks)
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = sum(1 for r in results if isinstance(r, BaseException))
        if failed:
            log.info(
                "pool burst: %d of %d tasks failed (pool timeout expected)", failed, len(tasks)
            )
