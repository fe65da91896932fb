"""The running dashboard: settings, engines and background services, shared by handlers.

Areas attach their own service here (sampler, pool registry, runner, state store) and
register it in `services` so the app's lifespan starts and stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.db import create_diagnostics_engine, create_observed_engine
from dashboard.health import Health
from dashboard.migrations.status import StatusService
from dashboard.settings import Settings
from dashboard.targets import Target

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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
    # async (Dashboard) -> dict callables; each area adds one to fill its Overview card
    overview_sections: list[Any] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    state: Any = None  # dashboard.state.store.StateStore when a database is configured
    runner: Any = None  # dashboard.migrations.runner.Runner when a database is configured
    sampler: Any = None  # dashboard.server.sampler.Sampler when a database is configured
    pools: Any = None  # dashboard.pool.registry.PoolRegistry when an engine is observed

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
        status = StatusService(diagnostics, target) if diagnostics else None
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
            from dashboard.migrations.runner import Runner
            from dashboard.state.store import StateStore

            dash.state = StateStore(url, settings.dashboard_schema)
            from dashboard.audit.record import install as install_audit

            install_audit(dash)  # login/logout and backend signals -> the audit table
            dash.runner = Runner(settings, target, url, dash.state, status)
            dash.services.extend([dash.state, dash.runner])
            dash.overview_sections.append(_runs_overview)
        if diagnostics is not None:
            from dashboard.server.overview import overview_section
            from dashboard.server.sampler import Sampler

            dash.sampler = Sampler(
                diagnostics,
                interval_s=settings.sample_interval_s,
                long_query_s=settings.long_query_s,
            )
            dash.services.append(dash.sampler)
            dash.overview_sections.append(overview_section(dash.sampler))
        if observed:
            from dashboard.pool.registry import PoolRegistry

            dash.pools = PoolRegistry.for_dashboard(dash)
            dash.services.append(dash.pools)
            dash.overview_sections.append(dash.pools.overview_section)
        return dash

    async def start(self) -> None:
        """Start every service once. Called by the app's lifespan, or lazily by the first
        request when a host mounts the app without forwarding lifespan events (Starlette's
        `mount` never runs a sub-application's lifespan)."""
        lock = self.extras.setdefault("start_lock", asyncio.Lock())
        async with lock:
            if self.extras.get("started"):
                return
            for svc in self.services:
                await svc.start()
            self.extras["started"] = True

    async def ensure_started(self) -> None:
        if not self.extras.get("started"):
            await self.start()

    async def stop(self) -> None:
        started = self.extras.pop("started", False)
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
    """Overview card of the runner (templates/runs/_card.html)."""
    if dash.runner is None:
        return {}
    result: dict[str, Any] = await dash.runner.overview()
    return result
