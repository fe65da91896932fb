"""The one background sampler of this process.

Every `interval_s` it reads pg_stat_activity + pg_locks (one statement) over the reserved
diagnostics engine, inside a short transaction whose first statement tightens
lock_timeout and statement_timeout, and publishes an immutable `Snapshot` as `latest`.
Pages and JSON endpoints only ever read `latest`: the cost on the server does not depend
on the number of viewers.

Relation watches (migration review): `watch_relations(names, ttl_s)` marks relations as
watched until `ttl_s` from now (a review page that keeps polling renews it). While any
watch is live, each cycle also runs `RELATION_LOCKS` once, in the same transaction on the
same connection, narrowed to the watched relation names, and the snapshot carries the
rows (`Snapshot.relation_locks`). Any number of viewers watching: still one statement per
cycle; nothing watched: the statement is not sent at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error
from dashboard.server import queries as q
from dashboard.server.model import Privileges, ServerSettings, build_settings, split_relation
from dashboard.server.snapshot import Snapshot, build_snapshot

log = logging.getLogger(__name__)

SETTINGS_TTL_S = 30.0
CYCLE_TIMEOUT_S = 5.0
QUERY_CHARS = 2000
MAX_BACKOFF_S = 30.0
WATCH_TTL_S = 30.0
MAX_WATCHED = 1000  # relation names watched at once (oldest-expiring dropped beyond)


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
        # bare relname -> monotonic deadline of its watch
        self._watches: dict[str, float] = {}
        self.relation_lock_queries = 0  # RELATION_LOCKS executions (one per watched cycle)
        self._published: asyncio.Event | None = None  # set (and replaced) after each cycle
        # Called with each new snapshot, on the sampler's loop, right after it is published
        # (history, incidents, the fleet). They must not block: enqueue, never await I/O.
        self._listeners: list[Callable[[Snapshot], None]] = []

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
            self._publish()
            self._notify(snap)
            return snap

    def add_listener(self, listener: Callable[[Snapshot], None]) -> None:
        """`listener(snapshot)` after every successful cycle (it must not block)."""
        self._listeners.append(listener)

    def _notify(self, snap: Snapshot) -> None:
        for listener in self._listeners:
            try:
                listener(snap)
            except Exception:
                log.exception("sampler listener %r failed", listener)

    def watch_relations(self, names: Iterable[str], ttl_s: float = WATCH_TTL_S) -> None:
        """Include the relation-level locks on these relations ("table" or "schema.table",
        as the review area names them) in every cycle until `ttl_s` from now. No I/O:
        calling it again (another viewer, the next poll) only extends the deadline."""
        deadline = time.monotonic() + max(0.0, ttl_s)
        for name in names:
            relname = split_relation(name)[1]
            if relname and relname != "?":
                self._watches[relname] = max(self._watches.get(relname, 0.0), deadline)
        if len(self._watches) > MAX_WATCHED:
            keep = sorted(self._watches.items(), key=lambda kv: kv[1])[-MAX_WATCHED:]
            self._watches = dict(keep)

    def unwatch_relations(self, names: Iterable[str] | None = None) -> None:
        """End the watches on these relations now (all of them when `names` is None)."""
        if names is None:
            self._watches.clear()
            return
        for name in names:
            self._watches.pop(split_relation(name)[1], None)

    def watched_relnames(self) -> frozenset[str]:
        """Bare relation names watched now (expired watches dropped)."""
        now = time.monotonic()
        expired = [name for name, until in self._watches.items() if until <= now]
        for name in expired:
            del self._watches[name]
        return frozenset(self._watches)

    async def wait_for_relations(
        self, names: Iterable[str], timeout_s: float = 5.0
    ) -> Snapshot | None:
        """The latest snapshot once it covers `names` (see `Snapshot.covers_relations`),
        waiting without querying for the cycles to come; the latest one (maybe not covering
        them) when `timeout_s` passes first. Call `watch_relations` before."""
        wanted = list(names)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    snap = self.latest
                    if snap is not None and snap.covers_relations(wanted):
                        return snap
                    if self._task is None:  # no loop to wait for: cycles come from refresh()
                        return snap
                    await self._next_publication().wait()
        return self.latest

    def _next_publication(self) -> asyncio.Event:
        if self._published is None:
            self._published = asyncio.Event()
        return self._published

    def _publish(self) -> None:
        event, self._published = self._published, None
        if event is not None:
            event.set()

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
                watched = self.watched_relnames()
                lock_rows: list[Any] | None = None
                if watched:
                    lsql = q.RELATION_LOCKS if settings.has_waitstart else q.RELATION_LOCKS_PRE14
                    res = await conn.execute(lsql, {"relnames": sorted(watched)})
                    lock_rows = list(res.mappings().all())
                    self.statements += 1
                    self.relation_lock_queries += 1
        self.cycles += 1
        snap = build_snapshot(
            rows,
            settings,
            privileges,
            taken_at=time.time(),
            duration_ms=sql_ms,
            long_query_s=self.long_query_s,
            cycle=self.cycles,
            relation_lock_rows=lock_rows,
            watched_relnames=watched,
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
