"""The fleet publisher: with every sampler cycle, this process's pool snapshot goes to the
shared state (one UPSERT into `fleet_pools` under DASHBOARD_SERVICE_NAME /
DASHBOARD_INSTANCE_NAME), and what every process reported in the last minute is read
back (one query) and cached for readers (the pool registry's `/api/pool` and Pool page).

The sampler listener only keeps the latest snapshot and wakes the background task: the
sampler is never slowed, and when the state database is slow or down, snapshots are
simply replaced by newer ones. A failure leaves `reading()` unavailable with the reason;
it never stops sampling or the task. Rows of processes that have not reported for a day
are deleted (at most every `prune_every_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error
from dashboard.history import fleet_queries as q
from dashboard.history.fleet_view import KEEP_S, LIVE_WINDOW_S, FleetReading
from dashboard.pool.registry import PoolRegistry
from dashboard.server.sampler import Sampler
from dashboard.server.snapshot import Snapshot
from dashboard.state.store import StateStore

if TYPE_CHECKING:
    from dashboard.context import Dashboard

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
PRUNE_EVERY_S = 600.0


class FleetPublisher:
    def __init__(
        self,
        store: StateStore,
        pools: PoolRegistry,
        sampler: Sampler,
        *,
        service: str,
        instance: str,
        window_s: float = LIVE_WINDOW_S,
        keep_s: float = KEEP_S,
        prune_every_s: float = PRUNE_EVERY_S,
        timeout_s: float = PUBLISH_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.pools = pools
        self.service = service
        self.instance = instance
        self.window_s = window_s
        self.keep_s = keep_s
        self.prune_every_s = prune_every_s
        self.timeout_s = timeout_s
        self.published = 0  # successful publishes
        self.failures = 0
        self.pruned = 0  # rows deleted by the pruning so far
        self.last_error: str | None = None
        self.published_at: float | None = None  # time.time() of the last success
        self._reading: FleetReading | None = None
        self._pending: Snapshot | None = None
        self._has_pending = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_prune = 0.0
        sampler.add_listener(self._on_sample)

    @classmethod
    def for_dashboard(cls, dash: Dashboard) -> FleetPublisher | None:
        """The publisher of a `Dashboard` (None without a state store, sampler or pools)."""
        if dash.state is None or dash.sampler is None or dash.pools is None:
            return None
        return cls(
            dash.state,
            dash.pools,
            dash.sampler,
            service=dash.settings.service_name,
            instance=dash.settings.instance_name,
        )

    # --- readers ------------------------------------------------------------------------

    def reading(self) -> FleetReading | None:
        """The last look at the shared state (None before the first report completed)."""
        return self._reading

    # --- lifecycle (a dashboard Service) --------------------------------------------------

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        wake = self._wake = asyncio.Event()
        if self._has_pending:
            wake.set()
        self._task = asyncio.create_task(self._run(wake), name="dashboard-fleet")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self._wake = None

    def _on_sample(self, snap: Snapshot) -> None:
        """Sampler listener (on the sampler's loop): keep the latest, wake the task."""
        self._pending, self._has_pending = snap, True
        if self._wake is not None:
            self._wake.set()

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            snap, self._pending, self._has_pending = self._pending, None, False
            try:
                await self.publish(snap)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the task die: the next cycle tries again
                log.exception("fleet: publishing the pool snapshot failed")

    # --- one report -----------------------------------------------------------------------

    async def publish(self, snap: Snapshot | None) -> FleetReading:
        """Upsert this process's pools, prune old rows when due, read the live instances."""
        pools = self.pools.fleet_pools(snap)
        prune = time.monotonic() >= self._next_prune
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.store.ensure()
                async with self.store.begin() as conn:
                    await q.upsert(conn, self.service, self.instance, pools)
                    pruned = await q.prune(conn, self.keep_s) if prune else 0
                    instances = await q.live(conn, self.window_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = describe_error(exc) if str(exc) else type(exc).__name__
            if self.last_error is None:
                log.warning("fleet: the shared state is unavailable: %s", reason)
            self.failures += 1
            self.last_error = reason
            self._reading = FleetReading(
                available=False,
                reason=f"the shared state is unavailable ({reason})",
                instances=(),
                read_at=time.monotonic(),
                read_wall=time.time(),
            )
            return self._reading
        if self.last_error is not None:
            log.info("fleet: the shared state is reachable again")
        if prune:
            self._next_prune = time.monotonic() + self.prune_every_s
            self.pruned += pruned
        self.last_error = None
        self.published += 1
        self.published_at = time.time()
        self._reading = FleetReading(
            available=True,
            reason=None,
            instances=tuple(instances),
            read_at=time.monotonic(),
            read_wall=self.published_at,
        )
        return self._reading
