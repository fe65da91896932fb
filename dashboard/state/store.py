"""The state store: the dashboard's own engine on its own schema, created and upgraded by
the dashboard's versioned migrations (`migrate.py`).

Each area keeps its SQL in its own repository on this store: runs, their log and
approvals in `dashboard/runs/repo.py`, the audit table in `dashboard/audit/repo.py`
(behind the one writer, `dashboard/audit/log.py`). Queries are SQLAlchemy Core
constructs on the schema-less tables of `model.py`; the configured schema is applied
through `schema_translate_map`, so no identifier is ever formatted into SQL text.

The engine is the dashboard's own (application_name "dashboard-state", a tiny pool with
statement and lock timeouts): never the observed application's pool.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard.state.migrate import STATE_APP_NAME, upgrade_state_schema

log = logging.getLogger(__name__)

STATE_SERVER_SETTINGS = {
    "application_name": STATE_APP_NAME,
    "statement_timeout": "10000",
    "lock_timeout": "2000",
    "idle_in_transaction_session_timeout": "20000",
}


def create_state_engine(url: str) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=3,
        max_overflow=3,
        pool_timeout=10,
        pool_recycle=600,
        pool_pre_ping=True,
        connect_args={"server_settings": dict(STATE_SERVER_SETTINGS), "timeout": 10},
    )


class StateUnavailable(Exception):
    """The dashboard schema could not be created or reached."""


class StateStore:
    """The dashboard's schema and engine. `start()` creates/upgrades the schema."""

    def __init__(self, url: str, schema: str = "dashboard") -> None:
        self.url = url
        self.schema = schema
        # For the target's own catalog (version table, pg_locks, pg_stat_activity).
        self.raw_engine = create_state_engine(url)
        # Every statement on the dashboard's tables goes to the configured schema.
        self.engine = self.raw_engine.execution_options(schema_translate_map={None: schema})
        self.ready = False
        self.error = "not started"
        self.applied: list[str] = []
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.ensure()
        except StateUnavailable as exc:
            log.warning("dashboard state schema not ready yet: %s", exc)

    async def stop(self) -> None:
        await self.raw_engine.dispose()

    async def ensure(self) -> None:
        if self.ready:
            return
        async with self._lock:
            if self.ready:
                return
            try:
                self.applied = await upgrade_state_schema(self.url, self.schema)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                raise StateUnavailable(self.error) from exc
            if self.applied:
                log.info("dashboard schema %r upgraded: %s", self.schema, self.applied)
            self.ready, self.error = True, ""

    def connect(self) -> Any:
        return self.engine.connect()

    def begin(self) -> Any:
        return self.engine.begin()
