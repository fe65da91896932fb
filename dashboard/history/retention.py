"""Retention and downsampling of the history, a periodic job with bounded passes.

One pass, in one transaction, by one process at a time (a transaction-level advisory
lock per schema; a process that does not get it skips the pass):

1. samples older than the retention (DASHBOARD_HISTORY_RETENTION_DAYS) are deleted, and
   incidents that ended before it (at most `delete_batch` rows of each);
2. per series, the oldest `chunk` of full-resolution rows older than a day is rolled up
   into one row per minute, service and instance (`resolution_s` = 60; minutes the
   writer already rolled up keep their row) and deleted;
3. per series, the service rows of the last `service_window` are recomputed from the
   instances' minute rows (one per minute and service, instance `WHOLE_SERVICE`): the
   charts over hours and days read these, whatever the number of instances.

When a pass leaves work behind (`PassResult.more`), the next one follows shortly; the
window arithmetic (`downsample_window`) is pure and unit-tested.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error
from dashboard.history import sample_queries as q
from dashboard.history.samples import SERIES, minute_of
from dashboard.history.series import SPECS
from dashboard.state.store import StateStore

log = logging.getLogger(__name__)

INTERVAL_S = 60.0
FIRST_PASS_AFTER_S = 10.0
BUSY_PAUSE_S = 1.0  # between passes while work remains


@dataclass(frozen=True)
class RetentionPolicy:
    retention: timedelta
    full_resolution: timedelta = timedelta(hours=24)
    chunk: timedelta = timedelta(minutes=30)  # full-resolution rows downsampled per pass
    delete_batch: int = 20_000  # expired rows (and incidents) deleted per pass
    # service rows are recomputed over this window (instances' minute rows arrive late)
    service_window: timedelta = timedelta(minutes=10)

    @classmethod
    def days(cls, retention_days: int) -> RetentionPolicy:
        return cls(retention=timedelta(days=retention_days))


def downsample_window(
    oldest_full: datetime | None, now: datetime, policy: RetentionPolicy
) -> tuple[datetime, datetime] | None:
    """The [lo, hi) of full-resolution rows to downsample in this pass: from the minute
    of the oldest one, at most `chunk` long, ending at the latest at the minute a day
    before `now` (whole minutes only: a minute is never split between two passes)."""
    if oldest_full is None:
        return None
    cutoff = minute_of(now - policy.full_resolution)
    lo = minute_of(oldest_full)
    if lo >= cutoff:
        return None
    return lo, min(lo + policy.chunk, cutoff)


@dataclass(frozen=True)
class PassResult:
    locked: bool  # False: another process was running a pass (this one did nothing)
    expired_samples: int = 0
    expired_incidents: int = 0
    minute_rows: int = 0  # minute rows written by downsampling
    full_rows_removed: int = 0
    service_rows: int = 0  # service rows (re)written
    more: bool = False  # work remained: another pass follows soon

    def to_json(self) -> dict[str, Any]:
        return {
            "locked": self.locked,
            "expired_samples": self.expired_samples,
            "expired_incidents": self.expired_incidents,
            "minute_rows": self.minute_rows,
            "full_rows_removed": self.full_rows_removed,
            "service_rows": self.service_rows,
            "more": self.more,
        }


class Retention:
    """A dashboard Service: runs `run_pass` every `interval_s` (sooner while behind)."""

    def __init__(
        self,
        store: StateStore,
        policy: RetentionPolicy,
        *,
        interval_s: float = INTERVAL_S,
        first_pass_after_s: float = FIRST_PASS_AFTER_S,
    ) -> None:
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self.first_pass_after_s = first_pass_after_s
        self.last_result: PassResult | None = None
        self.last_error: str | None = None
        self.passes = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-history-retention")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.first_pass_after_s)
        while True:
            result: PassResult | None = None
            try:
                result = await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                text = describe_error(exc) if str(exc) else type(exc).__name__
                if self.last_error is None:
                    log.warning("history retention: pass failed (%s); will retry", text)
                self.last_error = text
            await asyncio.sleep(BUSY_PAUSE_S if result and result.more else self.interval_s)

    async def run_pass(self, now: datetime | None = None) -> PassResult:
        """One bounded pass (see the module's docstring). Raises when the state database
        cannot be reached (the loop records it and tries again later)."""
        now = now or datetime.now(UTC)
        p = self.policy
        await self.store.ensure()
        async with self.store.begin() as conn:
            if not (await conn.execute(q.try_retention_lock(self.store.schema))).scalar():
                return PassResult(locked=False)
            await conn.execute(q.NO_JIT)
            cutoff = now - p.retention
            expired = (
                await conn.execute(q.delete_expired_samples(cutoff, p.delete_batch))
            ).rowcount
            ended = (
                await conn.execute(q.delete_expired_incidents(cutoff, p.delete_batch))
            ).rowcount
            more = expired >= p.delete_batch or ended >= p.delete_batch
            minute_rows = removed = 0
            for series in SERIES:
                oldest = (await conn.execute(q.oldest_full(series))).scalar()
                window = downsample_window(oldest, now, p)
                if window is None:
                    continue
                lo, hi = window
                minute_rows += (await conn.execute(q.rollup_minutes(series, lo, hi))).rowcount
                removed += (await conn.execute(q.delete_full(series, lo, hi))).rowcount
                more = more or hi < minute_of(now - p.full_resolution)
            service_rows = 0
            hi = minute_of(now)
            lo = hi - p.service_window
            for spec in SPECS.values():
                await conn.execute(q.delete_service_rows(spec.name, lo, hi))
                service_rows += (await conn.execute(q.rollup_service(spec, lo, hi))).rowcount
        result = PassResult(
            locked=True,
            expired_samples=max(0, expired),
            expired_incidents=max(0, ended),
            minute_rows=max(0, minute_rows),
            full_rows_removed=max(0, removed),
            service_rows=max(0, service_rows),
            more=more,
        )
        self.passes += 1
        self.last_result, self.last_error = result, None
        if expired or ended or removed:
            log.info("history retention: %s", result.to_json())
        return result
