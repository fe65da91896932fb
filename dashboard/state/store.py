"""The state store: the dashboard's own engine on its own schema, created and upgraded by
the dashboard's versioned migrations (`migrate.py`).

Each area keeps its SQL in its own repository on this store: runs, their log and
approvals in `dashboard/runs/repo.py`, the audit table in `dashboard/audit/repo.py`
(behind the one writer, `dashboard/audit/log.py`). Queries are SQLAlchemy Core
constructs on the schema-less tables of `model.py`; the configured schema is applied
through `schema_translate_map`, so no identifier is ever formatted into SQL text.

The engine is the dashboard's own (application_name "dashboard-state", a tiny pool with
statement and lock timeouts): never the observed application's pool.

Two roles (README "Two roles"): with `owner_url` (DASHBOARD_STATE_OWNER_URL) the schema is
created and upgraded as that OWNER role, which grants the role of `url` (the RUNTIME
role, the one this engine serves with) exactly what it needs. Either way, `tamper` says
whether the running role could alter audit rows (`roles.check_tamper`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dashboard.state.migrate import STATE_APP_NAME, upgrade_state_schema
from dashboard.state.roles import NOT_CHECKED, TamperCheck, check_tamper

log = logging.getLogger(__name__)

STATE_SERVER_SETTINGS = {
    "application_name": STATE_APP_NAME,
    "statement_timeout": "10000",
    "lock_timeout": "2000",
    "idle_in_transaction_session_timeout": "20000",
}


def create_state_engine(url: str, *, application_name: str = STATE_APP_NAME) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=3,
        max_overflow=3,
        pool_timeout=10,
        pool_recycle=600,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {**STATE_SERVER_SETTINGS, "application_name": application_name},
            "timeout": 10,
        },
    )


class StateUnavailable(Exception):
    """The dashboard schema could not be created or reached."""


class StateStore:
    """The dashboard's schema and engine. `start()` creates/upgrades the schema."""

    def __init__(
        self, url: str, schema: str = "dashboard", *, owner_url: str | None = None
    ) -> None:
        self.url = url
        self.schema = schema
        # The two-role setup: migrations run as this role, which grants the role of `url`.
        self.owner_url = owner_url
        # Without the schema translation: the catalog of this database (the target's too
        # when the schema lives there; see RunService for the other case).
        self.raw_engine = create_state_engine(url)
        # Every statement on the dashboard's tables goes to the configured schema.
        self.engine = self.raw_engine.execution_options(schema_translate_map={None: schema})
        self.ready = False
        self.error = "not started"
        self.applied: list[str] = []
        # Can the running role alter audit rows? Checked once ready, then on demand.
        self.tamper: TamperCheck = NOT_CHECKED
        self._tamper_at = 0.0
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
                if self.owner_url:
                    self.applied = await upgrade_state_schema(
                        self.owner_url, self.schema, runtime_role=await self.runtime_role()
                    )
                else:
                    self.applied = await upgrade_state_schema(self.url, self.schema)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                raise StateUnavailable(self.error) from exc
            if self.applied:
                log.info("dashboard schema %r upgraded: %s", self.schema, self.applied)
            self.ready, self.error = True, ""
            await self.check_tamper()
            if not self.tamper.protected:
                log.warning("the audit log is not tamper-proof: %s", self.tamper.reason)

    async def runtime_role(self) -> str:
        """The role this store serves with (the one the owner grants privileges to)."""
        async with self.raw_engine.connect() as conn:
            role: str = (await conn.execute(text("SELECT current_user"))).scalar_one()
        return role

    async def check_tamper(self) -> TamperCheck:
        """Re-read, as the running role, whether it could alter audit rows. Never raises."""
        try:
            async with self.raw_engine.connect() as conn:
                self.tamper = await check_tamper(conn, self.schema)
        except Exception as exc:
            self.tamper = TamperCheck(
                False, f"could not be checked: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            )
        self._tamper_at = time.monotonic()
        return self.tamper

    async def tamper_status(self, max_age_s: float = 60.0) -> TamperCheck:
        """The last check, re-read when older than `max_age_s` (privileges can change
        while the dashboard runs); `NOT_CHECKED` until the schema is ready."""
        if self.ready and time.monotonic() - self._tamper_at > max_age_s:
            return await self.check_tamper()
        return self.tamper

    def connect(self) -> Any:
        return self.engine.connect()

    def begin(self) -> Any:
        return self.engine.begin()
