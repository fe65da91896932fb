"""The incidents service: the sampler feeds the detector, a background task writes.

- `on_snapshot` is a sampler listener (it runs on the sampler's loop after every cycle):
  it reads the pools' counters and ledgers in process, asks the detector what changed and
  marks those incidents dirty. No I/O, never raises into the sampler.
- The writer task writes the dirty incidents, oldest first, to the state store
  (incident_queries.py). Only the latest state of each incident is kept, so while the
  state database is down detection goes on in memory and the writes wait (bounded: beyond
  `MAX_PENDING`, the oldest incidents that already ended are dropped, with a warning);
  when it is back, everything still pending is written.
- At start-up, incidents left open by a previous process are adopted (see
  `IncidentRepository.adoptable` and `IncidentDetector.adopt`).
- Retention of ended incidents is the history service's (dashboard/history/retention.py,
  with the samples).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error
from dashboard.history.incident_queries import IncidentQuery, IncidentRepository
from dashboard.history.incident_view import card
from dashboard.history.incidents import (
    FrameInfo,
    Holder,
    Incident,
    IncidentDetector,
    IncidentEvent,
    Observation,
    PoolReading,
    Thresholds,
)
from dashboard.pool.freeze import FreezeFrame
from dashboard.pool.join import doing, server_side
from dashboard.pool.registry import PoolRegistry
from dashboard.server.sampler import Sampler
from dashboard.server.snapshot import Snapshot
from dashboard.settings import Settings
from dashboard.state.store import StateStore

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # an open incident's updated_at is refreshed at least this often
STALE_S = 180.0  # an open incident not updated for this long belongs to a gone process
ADOPT_EVERY_S = 60.0  # how often incidents of gone processes are looked for
RETRY_S = 2.0  # first pause after a failed write (doubling up to MAX_RETRY_S)
MAX_RETRY_S = 10.0
ADOPT_TIMEOUT_S = 5.0
STOP_FLUSH_S = 3.0
MAX_PENDING = 1000
CARD_TTL_S = 3.0
CARD_WINDOW = timedelta(hours=24)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def holder_of(row: dict[str, Any]) -> Holder:
    """A ledger row as pages show it (dashboard/pool/view.py `connection_row`)."""
    pid = row.get("backend_pid")
    return Holder(
        backend_pid=pid if isinstance(pid, int) else None,
        held_for_s=float(row.get("held_for_s") or 0.0),
        origin=row.get("origin"),
        task=row.get("task"),
        doing=row.get("doing"),
        in_transaction=row.get("in_transaction"),
    )


def frame_info(frame: FreezeFrame) -> FrameInfo:
    locks = (frame.server or {}).get("locks") or {}
    blocked = locks.get("blocked_count")
    return FrameInfo(
        id=frame.id,
        at=frame.at,
        error=frame.error,
        timeouts=frame.timeouts,
        waiting=frame.waiting,
        checked_out=frame.stats.get("checked_out"),
        complete=frame.complete,
        holders=tuple(holder_of(r) for r in frame.connections),
        notes=tuple(frame.notes),
        server_error=frame.server_error,
        blocked_count=blocked if isinstance(blocked, int) else None,
    )


def pool_readings(
    pools: PoolRegistry | None, snapshot: Snapshot | None
) -> tuple[tuple[PoolReading, ...], dict[int, str]]:
    """Every observed pool's counters and ledger now (in process, no I/O), and the code
    origin of each checked-out connection's backend pid."""
    if pools is None:
        return (), {}
    readings: list[PoolReading] = []
    origins: dict[int, str] = {}
    frames = pools.frames.all()  # newest first
    now_mono = time.monotonic()
    for name, inst in pools.instruments.items():
        stats = inst.stats()
        holders: list[Holder] = []
        for entry in inst.entries():  # longest held first
            pid = entry.backend_pid
            o = entry.origin()
            origin = str(o) if o else None
            if pid is not None and origin:
                origins[pid] = origin
            holders.append(
                Holder(
                    backend_pid=pid,
                    held_for_s=entry.held_for(now_mono),
                    origin=origin,
                    task=entry.task_name,
                    doing=doing(server_side(pid, snapshot)),
                    in_transaction=entry.in_transaction(),
                )
            )
        frame = next((f for f in frames if f.pool == name), None)
        readings.append(
            PoolReading(
                name=name,
                waiting=stats.waiting,
                timeouts_total=stats.timeouts_total,
                checked_out=stats.checked_out,
                size=stats.size,
                limit=stats.limit,
                longest_wait_s=stats.longest_wait_s,
                holders=tuple(holders),
                frame=frame_info(frame) if frame is not None else None,
            )
        )
    return tuple(readings), origins


class IncidentService:
    """Detects incidents from every sampler cycle and keeps them in the state store."""

    def __init__(
        self,
        store: StateStore,
        sampler: Sampler,
        pools: PoolRegistry | None,
        settings: Settings,
        *,
        clock: Clock = _utcnow,
    ) -> None:
        self.store = store
        self.sampler = sampler
        self.pools = pools
        self.service = settings.service_name
        self.instance = settings.instance_name
        self.clock = clock
        self.repo = IncidentRepository(store)
        self.detector = IncidentDetector(
            Thresholds(
                min_blocked=settings.incident_min_blocked,
                min_s=settings.incident_min_s,
                idle_in_transaction_s=settings.leak_threshold_s,
                # the pool's calm period before its incident ends: the same time scale as
                # "sustained" for a pile-up
                pool_grace_s=settings.incident_min_s,
                heartbeat_s=HEARTBEAT_S,
            ),
            service=self.service,
            instance=self.instance,
        )
        self._pending: dict[int, Incident] = {}  # local id -> latest state to write
        self._db_ids: dict[int, int] = {}  # local id -> row id
        self._adopted = False
        self._adopted_mono = 0.0
        self.adopt_every_s = ADOPT_EVERY_S
        self._running = False
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._card: tuple[float, dict[str, Any]] | None = None
        self.last_error: str | None = None
        self.dropped = 0  # incidents never written (pending overflow during an outage)
        self.writes = 0

    # -- lifecycle (a dashboard Service) ---------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._wake = asyncio.Event()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ADOPT_TIMEOUT_S):
                await self._adopt()
        if not self._listening:
            self.sampler.add_listener(self.on_snapshot)
            self._listening = True
        self._task = asyncio.create_task(self._run(), name="dashboard-incidents")

    async def stop(self) -> None:
        self._running = False
        await cancel_and_wait(self._task)
        self._task = None
        if self._pending:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_FLUSH_S):
                    await self.flush()

    # -- the sampler's side ----------------------------------------------------------------
    def on_snapshot(self, snap: Snapshot) -> None:
        """Sampler listener: detect, mark dirty, wake the writer. Never raises."""
        if not self._running:
            return
        try:
            readings, origins = pool_readings(self.pools, snap)
            obs = Observation(at=self.clock(), snapshot=snap, pools=readings, origins=origins)
            self.record(self.detector.observe(obs))
            if time.monotonic() - self._adopted_mono >= self.adopt_every_s and self._wake:
                self._wake.set()  # time to look for incidents of processes that are gone
        except Exception:
            log.exception("incident detection failed for this cycle")

    def record(self, events: Iterable[IncidentEvent]) -> None:
        for ev in events:
            self._pending[ev.incident.local_id] = ev.incident
        if len(self._pending) > MAX_PENDING:
            self._shed()
        if self._pending and self._wake is not None:
            self._wake.set()

    def _shed(self) -> None:
        ended = sorted(k for k, inc in self._pending.items() if inc.ended_at is not None)
        for k in ended[: len(self._pending) - MAX_PENDING]:
            del self._pending[k]
            self._db_ids.pop(k, None)
            self.dropped += 1
        log.warning(
            "incidents: the state database has been unavailable for a while; %d ended "
            "incident(s) could not be kept for writing",
            self.dropped,
        )

    # -- the writer ------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        pause = RETRY_S
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                text = describe_error(exc) if str(exc) else type(exc).__name__
                if self.last_error is None:
                    log.warning("incidents: cannot write to the state database: %s", text)
                self.last_error = text
                await asyncio.sleep(pause)
                pause = min(MAX_RETRY_S, pause * 2)
                self._wake.set()  # try again
                continue
            if self.last_error is not None:
                log.info("incidents: the state database is back; pending incidents written")
            self.last_error = None
            pause = RETRY_S

    async def _adopt(self) -> None:
        """At start-up, and every ADOPT_EVERY_S after: take over incidents left open by a
        process that is gone (not updated for STALE_S), so an incident of a dashboard that
        stopped a moment before this one started is not shown as ongoing for ever."""
        mono = time.monotonic()
        if self._adopted and mono - self._adopted_mono < self.adopt_every_s:
            return
        self._adopted_mono = mono
        now = self.clock()
        records = await self.repo.adoptable(
            service=self.service,
            instance=self.instance,
            stale_before=now - timedelta(seconds=STALE_S),
        )
        for inc in self.detector.adopt(r.to_incident() for r in records):
            if inc.db_id is not None:
                self._db_ids[inc.local_id] = inc.db_id
        self._adopted = True
        if records:
            log.info("incidents: adopted %d incident(s) left open before", len(records))

    async def flush(self) -> None:
        """Write every pending incident, oldest first (so an incident that ended is closed
        before the next one of the same kind and key is opened)."""
        await self._adopt()
        for local_id in sorted(self._pending):
            inc = self._pending.get(local_id)
            if inc is None:
                continue
            db_id = self._db_ids.get(local_id) or inc.db_id
            if db_id is None:
                db_id = await self.repo.open(inc, service=self.service, instance=self.instance)
                self._db_ids[local_id] = db_id
                if inc.ended_at is not None:
                    await self.repo.update(db_id, inc)
            else:
                await self.repo.update(db_id, inc)
            self.writes += 1
            self._card = None
            if self._pending.get(local_id) is inc:
                del self._pending[local_id]
                if inc.ended_at is not None:
                    self._db_ids.pop(local_id, None)

    # -- reading ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "pending": len(self._pending),
            "writes": self.writes,
            "dropped": self.dropped,
            "error": self.last_error,
            "adopted": self._adopted,
        }

    async def overview_section(self, dash: Any = None) -> dict[str, Any]:
        """Feeds templates/incidents/_card.html on the Overview page (read at most every
        few seconds, whatever the number of viewers)."""
        cached = self._card
        if cached is not None and time.monotonic() - cached[0] < CARD_TTL_S:
            return {"incidents_card": cached[1]}
        now = self.clock()
        try:
            records = await self.repo.list_incidents(
                IncidentQuery(since=now - CARD_WINDOW, limit=100)
            )
        except Exception as exc:
            # the state database is away: say so, and show what is open in memory
            return {
                "incidents_card": {
                    "error": describe_error(exc) if str(exc) else type(exc).__name__,
                    "open": [
                        {"id": None, "kind": i.kind, "summary": i.summary, "ongoing": True}
                        for i in self.detector.open_incidents()
                    ],
                    "recent": [],
                }
            }
        body = card(records, now)
        self._card = (time.monotonic(), body)
        return {"incidents_card": body}
