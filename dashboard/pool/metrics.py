"""Prometheus exposition through prometheus-client, built at scrape time.

Names follow the OpenTelemetry database client semantic conventions where one exists
(`db.client.connection.*`, attribute `db.client.connection.pool.name` -> label
`pool_name`, `state` = idle|used); the rest are prefixed `dashboard_`. Each app gets its
own `CollectorRegistry`, so several dashboards in one process never collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dashboard.pool.histogram import Histogram
from dashboard.pool.registry import PoolRegistry
from dashboard.server.sampler import Sampler

log = logging.getLogger(__name__)

POOL = ["pool_name"]


def _hist(name: str, doc: str, pool: str, h: Histogram) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=POOL, unit="seconds")
    fam.add_metric([pool], buckets=h.cumulative(), sum_value=h.sum)
    return fam


class PoolCollector(Collector):
    def __init__(self, pools: PoolRegistry) -> None:
        self.pools = pools

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception:
            log.exception("pool metrics collection failed")

    def _collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "db_client_connection_count",
            "Connections currently in the pool, by state (idle = checked in, used = checked out).",
            labels=["pool_name", "state"],
        )
        cmax = GaugeMetricFamily(
            "db_client_connection_max",
            "Maximum number of open connections allowed (pool_size + max_overflow).",
            labels=POOL,
        )
        idle_max = GaugeMetricFamily(
            "db_client_connection_idle_max",
            "Maximum number of idle connections kept (pool_size).",
            labels=POOL,
        )
        pending = GaugeMetricFamily(
            "db_client_connection_pending_requests",
            "Callers waiting for a connection from the pool right now.",
            labels=POOL,
        )
        timeouts = CounterMetricFamily(
            "db_client_connection_timeouts",
            "Checkouts that failed with the pool limit error (pool_timeout reached).",
            labels=POOL,
        )
        overflow = GaugeMetricFamily(
            "dashboard_pool_overflow", "Connections open beyond pool_size.", labels=POOL
        )
        peak = GaugeMetricFamily(
            "dashboard_pool_peak_checked_out",
            "Highest number of connections checked out at once since start.",
            labels=POOL,
        )
        longest = GaugeMetricFamily(
            "dashboard_pool_longest_wait_seconds",
            "How long the longest current waiter has been waiting for a connection.",
            labels=POOL,
        )
        leaks = GaugeMetricFamily(
            "dashboard_pool_leak_suspects",
            "Checked-out connections held longer than the leak threshold.",
            labels=POOL,
        )
        oldest = GaugeMetricFamily(
            "dashboard_pool_oldest_checkout_seconds",
            "Age of the oldest checked-out connection.",
            labels=POOL,
        )
        counters: dict[str, CounterMetricFamily] = {
            key: CounterMetricFamily(f"dashboard_pool_{key}", doc, labels=POOL)
            for key, doc in (
                ("checkouts", "Successful checkouts."),
                ("connects", "New physical connections opened."),
                ("closes", "Physical connections closed."),
                ("invalidations", "Connections invalidated (errors, disconnects)."),
                (
                    "checkout_errors",
                    "Checkouts that failed for reasons other than the pool timeout.",
                ),
                ("instrumentation_errors", "Errors inside the dashboard's own instrumentation."),
            )
        }
        wait_hists: list[HistogramMetricFamily] = []
        threshold = self.pools.leak_threshold_s
        for name, inst in self.pools.instruments.items():
            s = inst.stats()
            count.add_metric([name, "idle"], s.checked_in)
            count.add_metric([name, "used"], s.checked_out)
            if s.limit is not None:
                cmax.add_metric([name], s.limit)
            if s.size is not None:
                idle_max.add_metric([name], s.size)
            pending.add_metric([name], s.waiting)
            timeouts.add_metric([name], s.timeouts_total)
            overflow.add_metric([name], s.overflow)
            peak.add_metric([name], s.peak_checked_out)
            longest.add_metric([name], s.longest_wait_s)
            entries = inst.entries()
            held = [e.held_for() for e in entries]
            leaks.add_metric([name], sum(1 for h in held if h >= threshold))
            oldest.add_metric([name], max(held, default=0.0))
            counters["checkouts"].add_metric([name], s.checkouts_total)
            counters["connects"].add_metric([name], s.connects_total)
            counters["closes"].add_metric([name], s.closes_total)
            counters["invalidations"].add_metric([name], s.invalidations_total)
            counters["checkout_errors"].add_metric([name], s.checkout_errors_total)
            counters["instrumentation_errors"].add_metric([name], s.errors_total)
            wait_hists.append(
                _hist(
                    "db_client_connection_wait_time",
                    "Time it took to obtain a connection from the pool.",
                    name,
                    s.wait,
                )
            )
        yield from (
            count,
            cmax,
            idle_max,
            pending,
            timeouts,
            overflow,
            peak,
            longest,
            leaks,
            oldest,
        )
        yield from counters.values()
        yield from _merge(wait_hists)


def _merge(fams: list[HistogramMetricFamily]) -> Iterator[Metric]:
    """One family per metric name, all pools' samples in it."""
    if not fams:
        return
    first = fams[0]
    for other in fams[1:]:
        first.samples.extend(other.samples)
    yield first


class ServerCollector(Collector):
    """Session and lock gauges from the sampler's latest snapshot (no query per scrape)."""

    def __init__(self, sampler_of: Callable[[], Sampler | None]) -> None:
        self.sampler_of = sampler_of

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception:
            log.exception("server metrics collection failed")

    def _collect(self) -> Iterator[Metric]:
        sampler = self.sampler_of()
        snap = sampler.latest if sampler is not None else None
        up = GaugeMetricFamily(
            "dashboard_pg_sampler_up", "1 when the last server sample succeeded, else 0."
        )
        ok = sampler is not None and snap is not None and sampler.last_error is None
        up.add_metric([], 1 if ok else 0)
        yield up
        if snap is None:
            return
        age = GaugeMetricFamily(
            "dashboard_pg_sample_age_seconds", "Age of the latest server sample."
        )
        age.add_metric([], float(snap.age_s))
        yield age
        sessions = GaugeMetricFamily(
            "dashboard_pg_sessions",
            "Client sessions in pg_stat_activity, by state.",
            labels=["state"],
        )
        by_state: dict[str, int] = {}
        oldest_xact = 0.0
        for s in snap.sessions.values():
            if s.backend_type != "client backend":
                continue
            state = s.state or "unknown"
            by_state[state] = by_state.get(state, 0) + 1
            xa = s.xact_age_s
            if xa is not None and not s.is_dashboard:
                oldest_xact = max(oldest_xact, float(xa))
        for state, n in sorted(by_state.items()):
            sessions.add_metric([state], n)
        yield sessions
        blocked = GaugeMetricFamily(
            "dashboard_pg_blocked_sessions", "Sessions waiting for a lock held by another session."
        )
        blocked.add_metric([], len(snap.blocked_by))
        yield blocked
        radius = GaugeMetricFamily(
            "dashboard_pg_max_blast_radius",
            "Most sessions waiting behind a single blocker (directly or transitively).",
        )
        radius.add_metric([], max(snap.blast_radius.values(), default=0))
        yield radius
        xact = GaugeMetricFamily(
            "dashboard_pg_oldest_transaction_seconds",
            "Age of the oldest open transaction (the dashboard's own excluded).",
        )
        xact.add_metric([], oldest_xact)
        yield xact
        mc = snap.settings.max_connections
        if mc:
            fam = GaugeMetricFamily("dashboard_pg_max_connections", "The server's max_connections.")
            fam.add_metric([], mc)
            yield fam


def build_registry(
    pools: PoolRegistry | None, sampler_of: Callable[[], Sampler | None]
) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    if pools is not None:
        reg.register(PoolCollector(pools))
    reg.register(ServerCollector(sampler_of))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
