"""The running dashboard: settings, engines and background services, shared by handlers.

Each area's service is a typed attribute here (state store, audit log, runs, sampler,
pool registry), `None` when its database or engine is not configured, and is
registered in `services` so the app's lifespan starts and stops it. Controllers receive
them through the Litestar dependencies of dashboard/web/deps.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.audit.log import AuditLog
from dashboard.auth.ratelimit import LoginLimiter
from dashboard.db import create_diagnostics_engine, create_observed_engine
from dashboard.health import Health
from dashboard.history.fleet import FleetPublisher
from dashboard.history.incident_service import IncidentService
from dashboard.history.service import History
from dashboard.migrations.status import StatusService
from dashboard.pool.metrics import build_registry
from dashboard.pool.registry import PoolRegistry
from dashboard.runs.service import RunService
from dashboard.server.sampler import Sampler
from dashboard.settings import Settings
from dashboard.state.store import StateStore
from dashboard.targets import Target

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# async (Dashboard) -> dict: each area adds one to fill its card on the Overview page
OverviewSection = Callable[["Dashboard"], Awaitable[dict[str, Any]]]


@dataclass
class Dashboard:
    settings: Settings
    target: Target
    diagnostics: AsyncEngine | None
    observed: dict[str, AsyncEngine]
    owns_observed: bool
    health: Health
    status: StatusService | None
    services: list[Service] = field(default_factory=list)
    overview_sections: list[OverviewSection] = field(default_factory=list)
    state: StateStore | None = None  # when a database is configured
    audit: AuditLog | None = None  # the one audit writer, on `state`
    runs: RunService | None = None  # migration runs, when a database is configured
    sampler: Sampler | None = None  # when a database is configured
    pools: PoolRegistry | None = None  # when an engine is observed
    history: History | None = None  # samples, retention, charts (state + sampler)
    fleet: FleetPublisher | None = None  # pool snapshots of every process (state + pools)
    incidents: IncidentService | None = None  # incident detection (state + sampler + history)
    # failed logins: in this process's memory; shared through `state` once build() wires it
    login_limiter: LoginLimiter = field(default_factory=LoginLimiter)
    state_health: Health | None = None  # the state database, when it is another one
    # Prometheus registry of this dashboard (never the global one); build() fills it
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    started: bool = False
    start_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @classmethod
    def build(
        cls, settings: Settings, engines: Mapping[str, AsyncEngine] | None = None
    ) -> Dashboard:
        target = Target.from_settings(settings)
        url = settings.database_url
        if url is None and engines:
            # Mounted mode without a URL: talk to the host's database over our own pool.
            first = next(iter(engines.values()))
            url = first.url.render_as_string(hide_password=False)
        diagnostics = create_diagnostics_engine(url) if url else None
        owns = engines is None
        observed: dict[str, AsyncEngine]
        if engines is not None:
            observed = dict(engines)
        elif url:
            observed = {
                "main": create_observed_engine(
                    url,
                    pool_size=settings.pool_size,
                    max_overflow=settings.max_overflow,
                    pool_timeout=settings.pool_timeout_s,
                )
            }
        else:
            observed = {}
        health = Health(diagnostics, interval_s=settings.sample_interval_s)
        status = (
            StatusService(diagnostics, target, exclude_schemas=settings.own_schemas_in_target)
            if diagnostics
            else None
        )
        dash = cls(
            settings=settings,
            target=target,
            diagnostics=diagnostics,
            observed=observed,
            owns_observed=owns,
            health=health,
            status=status,
        )
        dash.services.append(health)
        if url:
            # the dashboard's own schema: in the target database, or in another one
            # (DASHBOARD_STATE_DATABASE_URL; the target then gets no dashboard schema)
            dash.state = StateStore(
                settings.state_database_url or url,
                settings.dashboard_schema,
                owner_url=settings.state_owner_url,
            )
            dash.audit = AuditLog(dash.state)
            dash.runs = RunService(
                settings, target, url, dash.state, status=status, audit=dash.audit
            )
            dash.services.extend([dash.state, dash.runs])
            dash.overview_sections.append(_runs_overview)
        if diagnostics is not None:
            from dashboard.server.overview import overview_section

            dash.sampler = Sampler(
                diagnostics,
                interval_s=settings.sample_interval_s,
                long_query_s=settings.long_query_s,
            )
            dash.services.append(dash.sampler)
            dash.overview_sections.append(overview_section(dash.sampler))
        if observed:
            dash.pools = PoolRegistry.for_dashboard(dash)
            dash.services.append(dash.pools)
            dash.overview_sections.append(dash.pools.overview_section)
        if dash.runs is not None:
            # the review reads live conflicts from the sampler and code origins from pools
            dash.runs.review.sampler = dash.sampler
            dash.runs.review.pools = dash.pools
        # --- shared login state: sessions and the rate limiter in PostgreSQL (wired here) ---
        if dash.state is not None:
            from dashboard.auth.ratelimit_store import SharedFailureLog
            from dashboard.health import STATE_DATABASE, STATE_IMPACT, TARGET_DATABASE
            from dashboard.settings import same_database

            # (the login sessions' store is app.py's: it reads dash.state when used)
            dash.login_limiter = LoginLimiter(SharedFailureLog(dash.state))
            if url and not same_database(dash.state.url, url):
                # two databases: each has its probe, and says which one is unreachable
                health.label = TARGET_DATABASE
                dash.state_health = Health(
                    dash.state.raw_engine,
                    interval_s=settings.sample_interval_s,
                    label=STATE_DATABASE,
                    impact=STATE_IMPACT,
                )
                dash.services.append(dash.state_health)
        # --- history: samples, retention, charts (wired here) ---
        if settings.history and dash.state is not None and dash.sampler is not None:
            dash.history = History(dash.state, dash.sampler, settings, dash.pools)
            dash.services.append(dash.history)
        # --- incidents (wired here) ---
        if settings.history and dash.state is not None and dash.sampler is not None:
            dash.incidents = IncidentService(dash.state, dash.sampler, dash.pools, settings)
            dash.services.append(dash.incidents)
            dash.overview_sections.append(dash.incidents.overview_section)
        # --- fleet: pool snapshots of every process (wired here) ---
        if dash.state is not None and dash.sampler is not None and dash.pools is not None:
            dash.fleet = FleetPublisher.for_dashboard(dash)
            if dash.fleet is not None:
                dash.services.append(dash.fleet)
                dash.pools.fleet_source = dash.fleet
        dash.metrics = build_registry(dash.pools, lambda: dash.sampler)
        return dash

    async def start(self) -> None:
        """Start every service once. Called by the app's lifespan, or lazily by the first
        request when a host mounts the app without forwarding lifespan events (Starlette's
        `mount` never runs a sub-application's lifespan)."""
        async with self.start_lock:
            if self.started:
                return
            for svc in self.services:
                await svc.start()
            self.started = True

    async def ensure_started(self) -> None:
        if not self.started:
            await self.start()

    async def stop(self) -> None:
        started, self.started = self.started, False
        for svc in reversed(self.services if started else []):
            try:
                await svc.stop()
            except Exception:
                log.exception("stopping %r failed", svc)
        if self.owns_observed:
            for eng in self.observed.values():
                await eng.dispose()
        if self.diagnostics is not None:
            await self.diagnostics.dispose()


async def _runs_overview(dash: Dashboard) -> dict[str, Any]:
    """Overview card of the runs (templates/runs/_card.html)."""
    if dash.runs is None:
        return {}
    return await dash.runs.overview()
