"""The sample writer: the sampler's listener only enqueues; a background task writes.

`on_snapshot` runs on the sampler's loop after every cycle: it builds the cycle's compact
rows (samples.py, in-process data only) and appends them, with the minute rows that the
cycle completed, to a bounded queue. It never awaits and never raises into the sampler.

The flush task writes the queue in batches, each one INSERT, every `flush_interval_s` or
as soon as `batch_rows` rows wait. When the state database is unavailable, the batch goes
back to the queue, the error is kept (`last_error`, `gap_since`) and the write is retried
with a growing delay; the queue is bounded: past `max_queue` rows the oldest are dropped
and counted (`dropped`), which is the gap the history then shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error
from dashboard.history.sample_queries import insert_samples
from dashboard.history.samples import MinuteRollup, PoolCounters, SampleRow, build_rows
from dashboard.server.snapshot import Snapshot
from dashboard.state.store import StateStore

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 5.0
BATCH_ROWS = 300  # a flush starts early when this many rows wait
MAX_BATCH = 1000  # rows per INSERT (6 parameters each: well below asyncpg's 32767)
MAX_QUEUE = 10_000  # about 1.8 h of an outage at the default interval (3 rows / 2 s)
RETRY_MAX_S = 30.0
STOP_FLUSH_S = 3.0  # the last flush at shutdown waits no longer than this

PoolsOf = Callable[[], Sequence[PoolCounters] | None]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WriterStatus:
    ok: bool  # the last write (if any) succeeded
    queued: int
    dropped: int  # rows dropped because the queue was full (history gaps)
    written: int
    batches: int
    listener_errors: int
    last_error: str | None
    last_error_at: datetime | None
    gap_since: datetime | None  # writes failing since (None while they succeed)
    last_write_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        def iso(v: datetime | None) -> str | None:
            return v.isoformat() if v is not None else None

        return {
            "ok": self.ok,
            "queued": self.queued,
            "dropped": self.dropped,
            "written": self.written,
            "batches": self.batches,
            "listener_errors": self.listener_errors,
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "gap_since": iso(self.gap_since),
            "last_write_at": iso(self.last_write_at),
        }


class SampleWriter:
    """A dashboard Service (start/stop); `on_snapshot` is the sampler listener."""

    def __init__(
        self,
        store: StateStore,
        *,
        service: str,
        instance: str,
        pools_of: PoolsOf = lambda: None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        batch_rows: int = BATCH_ROWS,
        max_batch: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.store = store
        self.service = service
        self.instance = instance
        self.pools_of = pools_of
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.retry_max_s = retry_max_s
        self.rollup = MinuteRollup()
        self.queue: deque[SampleRow] = deque()
        self.dropped = 0
        self.written = 0
        self.batches = 0
        self.listener_errors = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.gap_since: datetime | None = None
        self.last_write_at: datetime | None = None
        self.ok = True
        self._retry_delay = flush_interval_s
        self._retry_at = 0.0  # monotonic: no write attempt before this while failing
        self._wake: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the listener (sampler's loop; no I/O, never raises) ----------------------------
    def on_snapshot(self, snap: Snapshot) -> None:
        try:
            rows = build_rows(snap, self.pools_of(), service=self.service, instance=self.instance)
            for row in rows:
                self.enqueue(row)
                for minute in self.rollup.add(row):
                    self.enqueue(minute)
        except Exception:
            self.listener_errors += 1
            if self.listener_errors == 1 or self.listener_errors % 1000 == 0:
                log.exception("history: building the samples of a cycle failed")
            return
        if len(self.queue) >= self.batch_rows and self._wake is not None:
            self._wake.set()

    def enqueue(self, row: SampleRow) -> None:
        if len(self.queue) >= self.max_queue:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(row)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task = asyncio.create_task(self._run(), name="dashboard-history-writer")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for minute in self.rollup.flush():  # the open minutes, as they stand
            self.enqueue(minute)
        if self.queue:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_FLUSH_S):
                    await self.flush()

    async def _run(self) -> None:
        while True:
            wake = self._wake
            assert wake is not None
            if not self.ok:  # failing: wait out the retry delay, whatever arrives
                await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval_s):
                        await wake.wait()
            wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # flush() records its errors; this is a bug: keep going
                log.exception("history: the writer's flush failed unexpectedly")

    # -- writing ------------------------------------------------------------------------
    async def flush(self) -> int:
        """Write everything queued now, in batches of at most `max_batch` rows (one
        INSERT each). Returns how many rows were written; stops at the first failure
        (the batch stays queued, the error is recorded). Never raises (but cancellation)."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        written = 0
        async with self._flush_lock:
            while self.queue:
                n = min(self.max_batch, len(self.queue))
                batch = [self.queue.popleft() for _ in range(n)]
                try:
                    await self.store.ensure()
                    async with self.store.begin() as conn:
                        await conn.execute(insert_samples(batch))
                except asyncio.CancelledError:
                    self._requeue(batch)
                    raise
                except Exception as exc:
                    self._requeue(batch)
                    self._failed(exc)
                    return written
                written += n
                self._succeeded(n)
        return written

    def _requeue(self, batch: list[SampleRow]) -> None:
        self.queue.extendleft(reversed(batch))
        while len(self.queue) > self.max_queue:
            self.queue.popleft()
            self.dropped += 1

    def _failed(self, exc: BaseException) -> None:
        text = describe_error(exc) if str(exc) else type(exc).__name__
        now = _now()
        if self.ok:
            log.warning("history: cannot write samples (%s); retrying, sampling goes on", text)
            self.gap_since = now
            self._retry_delay = self.flush_interval_s
        else:
            self._retry_delay = min(self.retry_max_s, self._retry_delay * 2)
        self.ok = False
        self.last_error, self.last_error_at = text, now
        self._retry_at = time.monotonic() + self._retry_delay

    def _succeeded(self, n: int) -> None:
        if not self.ok:
            log.info("history: writing samples again (failing since %s)", self.gap_since)
        self.ok = True
        self.gap_since = None
        self.written += n
        self.batches += 1
        self.last_write_at = _now()

    def status(self) -> WriterStatus:
        return WriterStatus(
            ok=self.ok,
            queued=len(self.queue),
            dropped=self.dropped,
            written=self.written,
            batches=self.batches,
            listener_errors=self.listener_errors,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            gap_since=self.gap_since,
            last_write_at=self.last_write_at,
        )
