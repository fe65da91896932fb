"""The pile-up watchdog: a task on the migration worker's loop with its own connection.

While a migration statement is in flight, it looks ten times a second at whether the
migration backend waits for a lock and how many sessions queue behind it
(`locking.PILEUP`). When the queue crosses `DASHBOARD_PILEUP_MAX_WAITERS` or its oldest
session has waited `DASHBOARD_PILEUP_MAX_WAIT_MS` (`pileup.cancel_reason`), it records who
holds the lock, marks the attempt as cancelled by the watchdog and cancels the
migration's statement; the lock retries (`lock_retry.py`) take over. It never cancels a
statement that got its lock: the cancel is conditional on the backend still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from dashboard.db import create_diagnostics_engine
from dashboard.runs import locking
from dashboard.runs.pileup import (
    WATCH_AFTER_S,
    WATCH_INTERVAL_S,
    PileupLimits,
    WatchdogStats,
    cancel_reason,
)
from dashboard.runs.progress import LiveRun

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, url: str, live: LiveRun, limits: PileupLimits) -> None:
        self.url = url
        self.live = live
        self.limits = limits
        self.stats = live.watchdog = WatchdogStats()

    async def run(self, pid: int, started: datetime | None) -> None:
        """Watch backend `pid` until cancelled (the run ends)."""
        engine = create_diagnostics_engine(self.url, pool_size=1)
        try:
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                if started is None:
                    started = await locking.backend_start(conn, pid)
                cancelled_seq = -1
                stats = self.stats
                last_look = 0.0
                while True:
                    await asyncio.sleep(WATCH_INTERVAL_S)
                    live = self.live
                    since = live.in_flight_since
                    if since is None or time.monotonic() - since < WATCH_AFTER_S:
                        last_look = 0.0
                        continue
                    t0 = time.monotonic()
                    if last_look:
                        stats.watched_s += t0 - last_look
                    last_look = t0
                    seq = live.attempt_seq
                    try:
                        reading = await locking.pileup(conn, pid)
                        stats.looks += 1
                        reason = cancel_reason(reading, self.limits)
                        if reason is None or seq == cancelled_seq or started is None:
                            continue
                        wait = await locking.lock_wait(conn, pid)
                        stats.looks += 1
                        if wait is not None:
                            live.last_lock_wait = wait
                        live.watchdog_reason = reason
                        live.watchdog_cancelled = True
                        stats.looks += 1
                        if await locking.cancel_lock_wait(conn, pid, started):
                            stats.cancels += 1
                            cancelled_seq = seq
                        elif live.attempt_seq == seq:
                            live.watchdog_cancelled = False  # it got its lock meanwhile
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.debug("watchdog look failed: %s", exc)
                    finally:
                        stats.query_s += time.monotonic() - t0
        finally:
            with contextlib.suppress(Exception):
                await engine.dispose()
