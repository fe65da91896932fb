"""The pool service of one dashboard: its instrumented pools, their recent history, the
freeze-frames, and the views that pages, `/api/pool` and `/metrics` read.

Nothing here does I/O on a viewer's behalf: counts come from the instruments (in
process), server data from the sampler's latest snapshot. The only I/O is one sampler
cycle right after a pool timeout (the freeze-frame), on the diagnostics engine, never on
the observed pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from dashboard.background import cancel_and_wait
from dashboard.db import describe_error
from dashboard.history import fleet_view
from dashboard.pool import capacity
from dashboard.pool.card import PoolFigures, PoolVerdict, Stuck, pool_verdict, stuck_in_pileup
from dashboard.pool.chart import NARROW_WIDTH, HistoryPoint, capacity_bar, chart
from dashboard.pool.freeze import FreezeFrame, FreezeFrames
from dashboard.pool.instrument import PoolInstrument, instrument
from dashboard.pool.join import other_backends
from dashboard.pool.view import clock, connection_row, rejoin, stats_json
from dashboard.pool.waiter import waiter_rows
from dashboard.server.cards import CardState, sample_time, worst
from dashboard.server.overview import trust
from dashboard.server.sampler import Sampler
from dashboard.server.snapshot import Snapshot

if TYPE_CHECKING:
    from dashboard.context import Dashboard

log = logging.getLogger(__name__)

HISTORY_WINDOW_S = 300.0
FREEZE_SAMPLE_TIMEOUT_S = 4.0
# Keys the Pool page adds to a pool's view for its own drawing: never published.
PAGE_ONLY_KEYS = ("chart", "chart_narrow", "bar", "verdict")


@dataclass(frozen=True)
class FleetPicture:
    """Every live process of every service (this one with its live pools) and, when the
    fleet view is unavailable, why (then `instances` is this process only)."""

    instances: tuple[fleet_view.InstanceReport, ...]
    unavailable: str | None
    read_age_s: float | None  # since the publisher last read the shared state

    def meta(self) -> dict[str, Any]:
        return {
            "available": self.unavailable is None,
            "reason": self.unavailable,
            "read_age_s": None if self.read_age_s is None else round(self.read_age_s, 3),
            "window_s": fleet_view.LIVE_WINDOW_S,
            "stale_after_intervals": fleet_view.STALE_INTERVALS,
        }


class PoolRegistry:
    def __init__(
        self,
        instruments: Mapping[str, PoolInstrument],
        *,
        sampler_of: Callable[[], Sampler | None] = lambda: None,
        health_of: Callable[[], Any] = lambda: None,
        leak_threshold_s: float = 60.0,
        replicas: int = 1,
        interval_s: float = 2.0,
        dashboard_connections: int = 0,
        keep_frames: int = 10,
        coalesce_s: float = 10.0,
        service_name: str = "app",
        instance_name: str = "this process",
    ) -> None:
        self.instruments: dict[str, PoolInstrument] = dict(instruments)
        # how this process is labelled in the fleet view, and where the fleet is read from
        # (dashboard/history/fleet.py; None: no shared state, DASHBOARD_REPLICAS counts)
        self.service_name = service_name
        self.instance_name = instance_name
        self.fleet_source: fleet_view.FleetSource | None = None
        self.sampler_of = sampler_of
        # the target database's reachability probe (dashboard/health.py), when there is one
        self.health_of = health_of
        self.leak_threshold_s = leak_threshold_s
        self.replicas = replicas
        self.interval_s = interval_s
        self.dashboard_connections = dashboard_connections
        self.frames = FreezeFrames(keep=keep_frames, coalesce_s=coalesce_s)
        points = int(HISTORY_WINDOW_S / max(0.1, interval_s)) + 2
        self.history: dict[str, deque[HistoryPoint]] = {
            name: deque(maxlen=points) for name in self.instruments
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def for_engines(
        cls, engines: Mapping[str, AsyncEngine | Engine], **kwargs: Any
    ) -> PoolRegistry:
        return cls({name: instrument(engine, name) for name, engine in engines.items()}, **kwargs)

    @classmethod
    def for_dashboard(cls, dash: Dashboard) -> PoolRegistry:
        """Instrument every observed engine of a `Dashboard` (see dashboard/context.py)."""
        settings = dash.settings
        reserve = 0
        diag = dash.diagnostics
        if diag is not None:
            pool = diag.pool
            size = pool.size() if hasattr(pool, "size") else 1
            reserve = size + max(0, int(getattr(pool, "_max_overflow", 0))) + 1  # + migration
        return cls.for_engines(
            dash.observed,
            sampler_of=lambda: dash.sampler,
            health_of=lambda: dash.health,
            leak_threshold_s=settings.leak_threshold_s,
            replicas=settings.replicas,
            interval_s=settings.sample_interval_s,
            dashboard_connections=reserve,
            service_name=settings.service_name,
            instance_name=settings.instance_name,
        )

    # --- lifecycle (a dashboard Service) ------------------------------------------------

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        for inst in self.instruments.values():
            if self._on_timeout not in inst.on_timeout:
                inst.on_timeout.append(self._on_timeout)
        self._sample_history()
        self._task = asyncio.create_task(self._history_loop(), name="dashboard-pool-history")

    async def stop(self) -> None:
        for inst in self.instruments.values():
            with contextlib.suppress(ValueError):
                inst.on_timeout.remove(self._on_timeout)
        for t in (self._task, *self._pending):
            await cancel_and_wait(t)
        self._task = None
        self._pending.clear()

    async def _history_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self._sample_history()
            except Exception:
                log.exception("pool history sample failed")

    def _sample_history(self) -> None:
        now = time.time()
        for name, inst in self.instruments.items():
            inst.ensure_current_pool()
            co, wt = inst.take_window_peaks()
            self.history[name].append(HistoryPoint(now, co, wt, inst.timeouts_total))

    # --- server snapshot --------------------------------------------------------------

    def sampler(self) -> Sampler | None:
        try:
            return self.sampler_of()
        except Exception:
            return None

    def snapshot(self) -> Snapshot | None:
        sampler = self.sampler()
        return sampler.latest if sampler is not None else None

    def health(self) -> Any:
        try:
            return self.health_of()
        except Exception:
            return None

    def server_unknown(self, now: float | None = None) -> str | None:
        """Why the latest server sample cannot be trusted now (None: it can)."""
        return trust(self.sampler(), self.health(), time.time() if now is None else now)

    def database_down(self) -> str | None:
        """The probe's reason while the target database is unreachable, else None."""
        health = self.health()
        if health is not None and getattr(health, "ok", None) is False:
            return str(getattr(health, "reason", "") or "no reason given")
        return None

    def verdict(
        self,
        inst: PoolInstrument,
        pids: list[int | None],
        snapshot: Snapshot | None,
        *,
        unknown: str | None,
        down: str | None,
        leak_suspects: int,
        now: float,
    ) -> tuple[PoolVerdict, Stuck | None]:
        """The pool's state, joined with the lock graph of a trustworthy snapshot."""
        stuck = None
        if unknown is None and snapshot is not None:
            stuck = stuck_in_pileup(pids, snapshot.blocked_by, snapshot.blast_radius)
        s = inst.stats()
        figures = PoolFigures(
            name=inst.name,
            checked_out=s.checked_out,
            limit=s.limit,
            waiting=s.waiting,
            longest_wait_s=s.longest_wait_s,
            timeouts_total=s.timeouts_total,
            last_timeout_age_s=None
            if s.last_timeout_at is None
            else max(0.0, now - s.last_timeout_at),
            leak_suspects=leak_suspects,
        )
        v = pool_verdict(
            figures,
            stuck=stuck,
            database_down=down,
            server_unknown=unknown,
            leak_threshold_s=self.leak_threshold_s,
        )
        return v, stuck

    # --- freeze-frames ----------------------------------------------------------------

    def _on_timeout(self, inst: PoolInstrument, exc: BaseException) -> None:
        """Runs in the caller whose checkout timed out: copy in-process state, no I/O."""
        now = time.time()
        if self.frames.coalesce(inst.name, now) is not None:
            return
        stats = inst.stats()
        rows = [
            connection_row(e, None, leak_threshold_s=self.leak_threshold_s, with_stack=True)
            for e in inst.entries()
        ]
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        frame = FreezeFrame(
            id=self.frames.next_id(),
            pool=inst.name,
            at=now,
            error=text[:300],
            stats=stats_json(stats),
            connections=rows,
            waiting=stats.waiting,
            longest_wait_s=stats.longest_wait_s,
            last_timeout_at=now,
            waiters=waiter_rows(inst.waiting_raw()),
        )
        self.frames.add(frame)
        loop = self._loop
        if loop is None or loop.is_closed():
            frame.server_error = "the dashboard is not running: no server sample"
            frame.complete = True
            return
        loop.call_soon_threadsafe(self._spawn_completion, frame)

    def _spawn_completion(self, frame: FreezeFrame) -> None:
        task = asyncio.get_running_loop().create_task(
            self._complete(frame), name=f"dashboard-freeze-{frame.id}"
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _complete(self, frame: FreezeFrame) -> None:
        try:
            sampler = self.sampler()
            snap: Snapshot | None = None
            if sampler is None:
                frame.server_error = "no server sampler in this dashboard"
            else:
                try:
                    async with asyncio.timeout(FREEZE_SAMPLE_TIMEOUT_S):
                        snap = await sampler.refresh()
                except Exception as exc:
                    snap = sampler.latest
                    reason = describe_error(exc) if str(exc) else type(exc).__name__
                    frame.server_error = f"fresh server sample failed ({reason})" + (
                        "; showing the previous one" if snap is not None else ""
                    )
            if snap is not None:
                frame.server = {
                    "taken_at": snap.taken_at,
                    "activity": snap.activity_json(),
                    "locks": snap.locks_json(),
                }
                rejoin(frame.connections, snap, self.leak_threshold_s)
                delay = max(0.0, snap.taken_at - frame.at)
                when = f"{delay * 1000:.0f} ms" if delay < 1 else f"{delay:.1f} s"
                frame.notes.append(f"server sampled {when} after the first timeout")
        except Exception:
            log.exception("completing freeze-frame %d failed", frame.id)
        finally:
            frame.complete = True

    # --- views ------------------------------------------------------------------------

    def pool_view(
        self, name: str, *, snapshot: Snapshot | None = None, with_history: bool = True
    ) -> dict[str, Any]:
        inst = self.instruments[name]
        stats = inst.stats()
        now_mono = time.monotonic()
        rows = [
            connection_row(e, snapshot, leak_threshold_s=self.leak_threshold_s, now_mono=now_mono)
            for e in inst.entries()
        ]
        own = inst.own_pids() | {r["backend_pid"] for r in rows if r["backend_pid"]}
        others = other_backends(snapshot, inst.application_names, own)
        body = stats_json(stats)
        body["connections"] = rows
        body["leak_suspects"] = sum(1 for r in rows if r["leak_suspect"])
        body["application_names"] = sorted(inst.application_names)
        body["other_backends"] = others.to_json() if others else None
        body["idle_backend_pids"] = sorted(inst.physical_pids() - {r["backend_pid"] for r in rows})
        body["waiters"] = waiter_rows(inst.waiting_raw(), now_mono=now_mono)
        if with_history:
            body["history"] = [
                {
                    "at": p.at,
                    "checked_out": p.checked_out,
                    "waiting": p.waiting,
                    "timeouts_total": p.timeouts_total,
                }
                for p in self.history.get(name, ())
            ]
        return body

    # --- the fleet -----------------------------------------------------------------------

    def fleet_pools(
        self, snapshot: Snapshot | None = None, views: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """This process's pools as published to the fleet (`views`: pool views already
        built for this request, else built now)."""
        if views is None:
            views = [
                self.pool_view(n, snapshot=snapshot, with_history=False) for n in self.instruments
            ]
        return [fleet_view.publishable(v, interval_s=self.interval_s) for v in views]

    def fleet_picture(
        self, snapshot: Snapshot | None = None, views: list[dict[str, Any]] | None = None
    ) -> FleetPicture:
        """Every live instance: the publisher's cached reading plus this process, live."""
        source = self.fleet_source
        reading = source.reading() if source is not None else None
        now_mono = time.monotonic()
        this = fleet_view.InstanceReport(
            service=self.service_name,
            instance=self.instance_name,
            reported_at=datetime.now(UTC),
            age_s=0.0,
            pools=tuple(self.fleet_pools(snapshot, views)),
            this_process=True,
        )
        return FleetPicture(
            instances=tuple(fleet_view.live_instances(reading, this, now_mono=now_mono)),
            unavailable=fleet_view.unavailable_reason(
                reading, source is not None, now_mono=now_mono
            ),
            read_age_s=None if reading is None else max(0.0, now_mono - reading.read_at),
        )

    def capacity(
        self, snapshot: Snapshot | None = None, fleet: FleetPicture | None = None
    ) -> list[capacity.Finding]:
        """Capacity findings; the connection budget counts the live instances of the fleet
        view (each with its own pool settings), DASHBOARD_REPLICAS when it is unavailable."""
        if fleet is None:
            fleet = self.fleet_picture(snapshot)
        configs = []
        for inst in self.instruments.values():
            s = inst.stats()
            configs.append(
                capacity.PoolConfig(
                    name=s.name,
                    pool_class=s.pool_class,
                    size=s.size,
                    max_overflow=s.max_overflow,
                    limit=s.limit,
                    timeout_s=s.timeout_s,
                    recycle_s=s.recycle_s,
                    pre_ping=s.pre_ping,
                )
            )
        server = capacity.server_limits_from(snapshot.settings if snapshot is not None else None)
        return capacity.check(
            configs,
            replicas=self.replicas,
            server=server,
            dashboard_connections=self.dashboard_connections,
            fleet=fleet_view.fleet_members(fleet.instances) if fleet.unavailable is None else None,
            fleet_unavailable=fleet.unavailable,
        )

    def api(self) -> dict[str, Any]:
        snap = self.snapshot()
        views = [self.pool_view(n, snapshot=snap) for n in self.instruments]
        fleet = self.fleet_picture(snap, views)
        return {
            "pools": views,
            "instances": fleet_view.instances_json(
                fleet.instances, default_interval_s=self.interval_s
            ),
            "fleet": fleet.meta(),
            "freeze_frames": [f.summary() for f in self.frames.all()],
            "capacity": [f.to_json() for f in self.capacity(snap, fleet)],
            "leak_threshold_s": self.leak_threshold_s,
            "server_snapshot": _snapshot_meta(snap, self.sampler()),
        }

    def page(self) -> dict[str, Any]:
        """Template context for the Pool page and its htmx panel."""
        snap = self.snapshot()
        now = time.time()
        unknown = self.server_unknown(now)
        down = self.database_down()
        pools = []
        for name, inst in self.instruments.items():
            view = self.pool_view(name, snapshot=snap, with_history=False)
            verdict, stuck = self.verdict(
                inst,
                [r["backend_pid"] for r in view["connections"]],
                snap,
                unknown=unknown,
                down=down,
                leak_suspects=view["leak_suspects"],
                now=now,
            )
            view["verdict"] = {
                "state": verdict.state,
                "headline": verdict.headline,
                "detail": verdict.detail,
                "notes": list(verdict.notes),
                "stuck": stuck.to_json() if stuck is not None else None,
                "lock_state_unknown": unknown,
            }
            points = list(self.history.get(name, ()))
            view["chart"] = chart(
                points, now=now, window_s=HISTORY_WINDOW_S, size=view["size"], limit=view["limit"]
            )
            view["chart_narrow"] = chart(
                points,
                now=now,
                window_s=HISTORY_WINDOW_S,
                size=view["size"],
                limit=view["limit"],
                width=NARROW_WIDTH,
            )
            view["bar"] = capacity_bar(
                view["size"],
                view["limit"],
                view["checked_out"],
                view["checked_in"],
                view["waiting"],
            )
            pools.append(view)
        fleet = self.fleet_picture(
            snap, [{k: v for k, v in p.items() if k not in PAGE_ONLY_KEYS} for p in pools]
        )
        return {
            "pools": pools,
            "fleet": {
                **fleet.meta(),
                "groups": fleet_view.group_by_service(
                    fleet.instances, default_interval_s=self.interval_s
                ),
                "service": self.service_name,
                "instance": self.instance_name,
            },
            "frames": [f.summary() for f in self.frames.all()],
            "findings": self.capacity(snap, fleet),
            "leak_threshold_s": self.leak_threshold_s,
            "server": _snapshot_meta(snap, self.sampler()),
            "now": now,
        }

    async def overview_section(self, dash: Any = None) -> dict[str, Any]:
        """Feeds templates/pool/_card.html on the Overview page: per pool, the worst
        relevant truth (see dashboard/pool/card.py) and when each figure was taken."""
        now = time.time()
        snap = self.snapshot()
        unknown = self.server_unknown(now)
        down = self.database_down()
        cards = []
        states: list[CardState] = []
        for name, inst in self.instruments.items():
            s = inst.stats()
            entries = inst.entries()
            leaks = sum(1 for e in entries if e.held_for() >= self.leak_threshold_s)
            verdict, stuck = self.verdict(
                inst,
                [e.backend_pid for e in entries],
                snap,
                unknown=unknown,
                down=down,
                leak_suspects=leaks,
                now=now,
            )
            states.append(verdict.state)
            cards.append(
                {
                    "name": name,
                    "state": verdict.state,
                    "headline": verdict.headline,
                    "detail": verdict.detail,
                    "notes": list(verdict.notes),
                    "stuck": stuck.to_json() if stuck is not None else None,
                    "checked_out": s.checked_out,
                    "limit": s.limit,
                    "size": s.size,
                    "waiting": s.waiting,
                    "longest_wait_s": s.longest_wait_s,
                    "timeouts_total": s.timeouts_total,
                    "counting_since": clock(s.counting_since),
                    "leak_suspects": leaks,
                }
            )
        latest = self.frames.all()[:1]
        lock_sample = sample_time(snap.taken_at, now) if snap is not None and not unknown else None
        return {
            "pool_card": {
                "state": worst(states) if cards else "unknown",
                "pools": cards,
                "last_frame": latest[0] if latest else None,
                "counts_read": sample_time(now, now, live=True),
                "lock_sample": lock_sample,
                "lock_state_unknown": unknown,
                "database_down": down,
            }
        }


def _snapshot_meta(snap: Snapshot | None, sampler: Sampler | None) -> dict[str, Any]:
    if sampler is None:
        return {"available": False, "reason": "no server sampler (no database configured)"}
    if snap is None:
        return {
            "available": False,
            "reason": sampler.last_error or "first server sample not taken yet",
        }
    return {
        "available": True,
        "taken_at": snap.taken_at,
        "age_s": round(max(0.0, time.time() - snap.taken_at), 3),
        "error": sampler.last_error,
    }
