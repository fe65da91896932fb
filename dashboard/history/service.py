"""The history of one dashboard: the sample writer (a sampler listener), the retention
job and the reader, started and stopped together (a dashboard Service).

Wired in `Dashboard.build()` (dashboard/context.py) when `settings.history` is on and
the dashboard has a state store and a sampler; rows are labelled with
DASHBOARD_SERVICE_NAME / DASHBOARD_INSTANCE_NAME.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dashboard.history.reader import HistoryReader
from dashboard.history.retention import Retention, RetentionPolicy
from dashboard.history.samples import PoolCounters, pool_counters_of
from dashboard.history.writer import SampleWriter
from dashboard.server.sampler import Sampler
from dashboard.settings import Settings
from dashboard.state.store import StateStore

if TYPE_CHECKING:
    from dashboard.pool.registry import PoolRegistry


class History:
    def __init__(
        self,
        store: StateStore,
        sampler: Sampler,
        settings: Settings,
        pools: PoolRegistry | None = None,
    ) -> None:
        self.store = store
        self.service = settings.service_name
        self.instance = settings.instance_name
        self.sample_interval_s = settings.sample_interval_s
        self.retention_days = settings.history_retention_days

        def pools_of() -> Sequence[PoolCounters] | None:
            return pool_counters_of(pools) if pools is not None else None

        self.writer = SampleWriter(
            store, service=self.service, instance=self.instance, pools_of=pools_of
        )
        self.retention = Retention(store, RetentionPolicy.days(settings.history_retention_days))
        self.reader = HistoryReader(store)
        sampler.add_listener(self.writer.on_snapshot)

    async def start(self) -> None:
        await self.writer.start()
        await self.retention.start()

    async def stop(self) -> None:
        await self.retention.stop()
        await self.writer.stop()

    def status(self) -> dict[str, Any]:
        r = self.retention
        return {
            "service": self.service,
            "instance": self.instance,
            "retention_days": self.retention_days,
            "writer": self.writer.status().to_json(),
            "retention": {
                "passes": r.passes,
                "last_error": r.last_error,
                "last_pass": r.last_result.to_json() if r.last_result else None,
            },
        }
