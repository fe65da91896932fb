"""The one background sampler of this process.

Every `interval_s` it reads pg_stat_activity + pg_locks (one statement) over the reserved
diagnostics engine, inside a short transaction whose first statement tightens
lock_timeout and statement_timeout, and publishes an immutable `Snapshot` as `latest`.
Pages and JSON endpoints only ever read `latest`: the cost on the server does not depend
on the number of viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error
from dashboard.server import queries as q
from dashboard.server.model import Privileges, ServerSettings, build_settings
from dashboard.server.snapshot import Snapshot, build_snapshot

log = logging.getLogger(__name__)

SETTINGS_TTL_S = 30.0
CYCLE_TIMEOUT_S = 5.0
QUERY_CHARS = 2000
MAX_BACKOFF_S = 30.0


class Sampler:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval_s: float = 2.0,
        long_query_s: float = 30.0,
        settings_ttl_s: float = SETTINGS_TTL_S,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.long_query_s = long_query_s
        self.settings_ttl_s = settings_ttl_s
        self.latest: Snapshot | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.cycles = 0
        self.failures = 0
        self.statements = 0  # statements this sampler has sent (for the benchmark/metrics)
        self.cycle_ms: deque[float] = deque(maxlen=512)  # recent whole-cycle durations
        self._settings: ServerSettings | None = None
        self._privileges: Privileges | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._ready: asyncio.Event | None = None

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._ensure_primitives()
        self._task = asyncio.create_task(self._loop(), name="dashboard-sampler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def _ensure_primitives(self) -> tuple[asyncio.Lock, asyncio.Event]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._lock, self._ready

    async def _loop(self) -> None:
        consecutive = 0
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                consecutive += 1
            else:
                consecutive = 0
            delay = self.interval_s * (2 ** min(consecutive, 4)) if consecutive else self.interval_s
            delay = min(delay, max(self.interval_s, MAX_BACKOFF_S))
            await asyncio.sleep(max(0.05, delay - (time.monotonic() - started)))

    # --- public ------------------------------------------------------------------------
    async def refresh(self) -> Snapshot:
        """Run one cycle now (it starts after this call; concurrent calls are serialized)
        and return its snapshot. Raises when the database cannot be sampled."""
        lock, ready = self._ensure_primitives()
        async with lock:
            try:
                snap = await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record_failure(exc)
                ready.set()  # the first cycle is over: waiters see the error, not a hang
                raise
            if self.last_error is not None:
                log.info("sampler recovered after %d failed cycle(s)", self.failures)
            self.last_error = None
            self.latest = snap
            ready.set()
            return snap

    async def wait_ready(self, timeout_s: float = 2.0) -> Snapshot | None:
        """The latest snapshot, waiting (without querying) for the first cycle to finish
        if none has yet; None when it failed (see `last_error`)."""
        if self.latest is not None or self._task is None or self.failures:
            return self.latest
        _, ready = self._ensure_primitives()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await ready.wait()
        return self.latest

    def status(self) -> dict[str, Any]:
        snap = self.latest
        age = snap.age_s if snap else None
        return {
            "ok": self.last_error is None and snap is not None,
            "error": self.last_error,
            "error_at": self.last_error_at,
            "age_s": None if age is None else round(age, 3),
            "stale": snap is None or (age is not None and age > 3 * self.interval_s + 1),
            "interval_s": self.interval_s,
            "cycles": self.cycles,
            "failures": self.failures,
            "last_cycle_ms": round(self.cycle_ms[-1], 3) if self.cycle_ms else None,
        }

    # --- one cycle ---------------------------------------------------------------------
    def _record_failure(self, exc: BaseException) -> None:
        text = describe_error(exc) if str(exc) else type(exc).__name__
        if self.last_error is None:
            log.warning("sampler: cannot sample the server: %s", text)
        self.failures += 1
        self.last_error, self.last_error_at = text, time.time()

    async def _cycle(self) -> Snapshot:
        t0 = time.perf_counter()
        async with asyncio.timeout(CYCLE_TIMEOUT_S):
            async with self.engine.connect() as conn, conn.begin():
                await conn.execute(
                    q.TIGHT_TIMEOUTS,
                    {
                        "lock_ms": str(q.SAMPLER_LOCK_TIMEOUT_MS),
                        "stmt_ms": str(q.SAMPLER_STATEMENT_TIMEOUT_MS),
                    },
                )
                self.statements += 1
                settings, privileges = await self._settings_for(conn)
                sql = q.SAMPLE if settings.has_waitstart else q.SAMPLE_PRE14
                t_sql = time.perf_counter()
                result = await conn.execute(sql, {"query_chars": QUERY_CHARS})
                rows = result.mappings().all()
                self.statements += 1
                sql_ms = (time.perf_counter() - t_sql) * 1000.0
        self.cycles += 1
        snap = build_snapshot(
            rows,
            settings,
            privileges,
            taken_at=time.time(),
            duration_ms=sql_ms,
            long_query_s=self.long_query_s,
            cycle=self.cycles,
        )
        self.cycle_ms.append((time.perf_counter() - t0) * 1000.0)
        return snap

    async def _settings_for(self, conn: AsyncConnection) -> tuple[ServerSettings, Privileges]:
        cached, priv = self._settings, self._privileges
        if cached is not None and priv is not None:
            if time.time() - cached.read_at < self.settings_ttl_s:
                return cached, priv
        names = list(q.SETTING_NAMES)
        rows = [dict(r) for r in (await conn.execute(q.SETTINGS, {"names": names})).mappings()]
        prow = (await conn.execute(q.PRIVILEGES)).mappings().first()
        priv = Privileges(**dict(prow)) if prow is not None else Privileges()
        db_roles = [dict(r) for r in (await conn.execute(q.DB_ROLE_SETTINGS)).mappings()]
        self.statements += 3
        file_rows: list[dict[str, Any]] | None = None
        if priv.is_superuser:
            try:
                async with conn.begin_nested():
                    res = await conn.execute(q.FILE_SETTINGS, {"names": names})
                    file_rows = [dict(r) for r in res.mappings()]
                self.statements += 1
            except Exception as exc:  # unreadable config file: fall back, keep sampling
                log.debug("pg_file_settings unreadable: %s", exc)
        settings = build_settings(rows, db_roles, file_rows, read_at=time.time())
        self._settings, self._privileges = settings, priv
        return settings, priv
