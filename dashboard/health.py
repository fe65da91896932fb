"""Is the target database reachable? A tiny background probe, so pages can show a banner
and recover by themselves when the database comes back.

With DASHBOARD_STATE_DATABASE_URL the dashboard talks to two databases, each with its own
probe; `label` then names which one a reason is about ("target database", "state
database"), in the logs, the page banner and /readyz.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error

log = logging.getLogger(__name__)

# Labels of the two probes when the dashboard's schema lives in another database
TARGET_DATABASE = "target database"
STATE_DATABASE = "state database"
STATE_IMPACT = "runs, approvals, the audit log, history and password logins are unavailable"


class Health:
    def __init__(
        self,
        engine: AsyncEngine | None,
        interval_s: float = 2.0,
        *,
        label: str | None = None,
        impact: str = "",
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        # which database this probe watches, when the dashboard uses two (None: only one),
        # and what stops working while it is unreachable (said in the banner)
        self.label = label
        self.impact = impact
        self.ok: bool | None = None
        self.reason: str = "not checked yet"
        self.checked_at: float = 0.0
        self._task: asyncio.Task[None] | None = None

    async def check(self, timeout_s: float = 2.0) -> tuple[bool, str]:
        if self.engine is None:
            self._record(False, "no database configured (DASHBOARD_DATABASE_URL is not set)")
            return False, self.reason
        try:
            async with asyncio.timeout(timeout_s):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            self._record(False, describe_error(exc) if str(exc) else "timed out")
        else:
            self._record(True, "")
        return bool(self.ok), self.reason

    def _record(self, ok: bool, reason: str) -> None:
        if ok != self.ok:
            what = self.label or "database"
            if ok:
                log.info("%s reachable", what)
            else:
                log.warning("%s unreachable: %s", what, reason)
        self.ok, self.reason, self.checked_at = ok, reason, time.time()

    def describe(self) -> str:
        """The reason, saying which database when there are two."""
        return f"{self.label} unreachable: {self.reason}" if self.label else self.reason

    def banner(self) -> str:
        """The page banner's text while the database is unreachable."""
        where = f" ({self.label})" if self.label else ""
        impact = f"; {self.impact}" if self.impact else ""
        return f"Database unreachable{where}: {self.reason}{impact}"

    def mark_failure(self, exc: BaseException) -> None:
        self._record(False, describe_error(exc))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dashboard-health")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)
