"""Compact sample records of one sampler cycle, and their minute roll-up. Pure: no I/O.

Each cycle gives one row per series (`pool`, `locks`, `activity`), labelled with the
process's service and instance. A row's `data` is small JSON (a few hundred bytes): the
counters a chart needs, and for locks the top roots with their blast radius, never the
whole tree. Every row carries a `level` (pool: in use + waiting; locks: sessions waiting;
activity: client sessions) by which a minute keeps its worst sample when rows are rolled
up into one per minute (`MinuteRollup` here, the retention job's SQL for what it missed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dashboard.server.snapshot import Snapshot
from dashboard.state.model import SERIES

if TYPE_CHECKING:
    from dashboard.pool.registry import PoolRegistry

FULL = 0  # resolution_s of a row written by one sampler cycle
MINUTE = 60  # resolution_s of a row standing for one minute
# The instance label of a service row: one row per series, minute and service that
# combines the minute rows of all its instances (written by the retention job; charts
# over hours and days read these, so their cost does not grow with the instances).
WHOLE_SERVICE = ""
ROOT_LIMIT = 10  # lock roots kept per sample (largest blast radius first)
QUERY_CHARS = 200  # query text kept per lock root
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")

__all__ = [
    "FULL",
    "MINUTE",
    "SERIES",
    "WHOLE_SERVICE",
    "ActivitySample",
    "LockRoot",
    "LocksSample",
    "MinuteRollup",
    "PoolCounters",
    "PoolSample",
    "SampleRow",
    "activity_sample",
    "build_rows",
    "locks_sample",
    "minute_of",
    "pool_counters_of",
    "pool_sample",
]


def _r(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One row of `samples`: what a cycle (or a minute) saw of one series."""

    at: datetime
    series: str
    service: str
    instance: str
    resolution_s: int
    data: Mapping[str, Any]  # JSON-ready

    @property
    def level(self) -> float:
        value = self.data.get("level")
        return float(value) if isinstance(value, int | float) else 0.0

    def values(self) -> dict[str, Any]:
        """Column values for an INSERT."""
        return {
            "at": self.at,
            "series": self.series,
            "service": self.service,
            "instance": self.instance,
            "resolution_s": self.resolution_s,
            "data": dict(self.data),
        }


# -- pool ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PoolCounters:
    """One pool's counters at a cycle (and its peaks since the registry's last point)."""

    name: str
    size: int | None
    max_overflow: int | None
    limit: int | None
    checked_out: int
    checked_in: int
    overflow: int
    waiting: int
    longest_wait_s: float
    timeouts_total: int
    checkouts_total: int
    peak_checked_out: int
    peak_waiting: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "max_overflow": self.max_overflow,
            "limit": self.limit,
            "checked_out": self.checked_out,
            "checked_in": self.checked_in,
            "overflow": self.overflow,
            "waiting": self.waiting,
            "longest_wait_s": _r(self.longest_wait_s),
            "timeouts_total": self.timeouts_total,
            "checkouts_total": self.checkouts_total,
            "peak_checked_out": self.peak_checked_out,
            "peak_waiting": self.peak_waiting,
        }


@dataclass(frozen=True, slots=True)
class PoolSample:
    pools: tuple[PoolCounters, ...]

    def to_json(self) -> dict[str, Any]:
        """Totals over the process's pools at the top (what charts add up across
        instances), each pool below."""
        ps = self.pools
        # peaks since the previous point catch a burst between two cycles
        checked_out = sum(max(p.checked_out, p.peak_checked_out) for p in ps)
        waiting = sum(max(p.waiting, p.peak_waiting) for p in ps)
        limits = [p.limit for p in ps if p.limit is not None]
        return {
            "level": checked_out + waiting,
            "checked_out": checked_out,
            "waiting": waiting,
            "size": sum(p.size or 0 for p in ps),
            "limit": sum(limits) if ps and len(limits) == len(ps) else None,
            "timeouts_total": sum(p.timeouts_total for p in ps),
            "longest_wait_s": _r(max((p.longest_wait_s for p in ps), default=0.0)),
            "pools": [p.to_json() for p in ps],
        }


def pool_counters_of(registry: PoolRegistry) -> list[PoolCounters]:
    """The registry's current view of its pools (in-process counters, no I/O). Peaks come
    from the registry's own latest chart point (its window peaks are not reset here)."""
    out: list[PoolCounters] = []
    for name, inst in registry.instruments.items():
        s = inst.stats()
        history = registry.history.get(name)
        last = history[-1] if history else None
        out.append(
            PoolCounters(
                name=name,
                size=s.size,
                max_overflow=s.max_overflow,
                limit=s.limit,
                checked_out=s.checked_out,
                checked_in=s.checked_in,
                overflow=s.overflow,
                waiting=s.waiting,
                longest_wait_s=s.longest_wait_s,
                timeouts_total=s.timeouts_total,
                checkouts_total=s.checkouts_total,
                peak_checked_out=last.checked_out if last is not None else s.checked_out,
                peak_waiting=last.waiting if last is not None else s.waiting,
            )
        )
    return out


def pool_sample(counters: Iterable[PoolCounters]) -> PoolSample:
    return PoolSample(tuple(counters))


# -- locks -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LockRoot:
    pid: int
    blast_radius: int
    direct_waiters: int
    application_name: str | None
    user: str | None
    state: str | None
    xact_age_s: float | None
    query: str | None  # None when the dashboard's role may not read it
    in_cycle: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "blast_radius": self.blast_radius,
            "direct_waiters": self.direct_waiters,
            "application_name": self.application_name,
            "user": self.user,
            "state": self.state,
            "xact_age_s": _r(self.xact_age_s, 1),
            "query": self.query,
            "in_cycle": self.in_cycle,
        }


@dataclass(frozen=True, slots=True)
class LocksSample:
    blocked_count: int
    root_count: int
    longest_wait_s: float | None
    roots: tuple[LockRoot, ...]  # the largest blast radius first, at most ROOT_LIMIT

    @property
    def max_blast_radius(self) -> int:
        return max((r.blast_radius for r in self.roots), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.blocked_count,
            "blocked_count": self.blocked_count,
            "root_count": self.root_count,
            "max_blast_radius": self.max_blast_radius,
            "longest_wait_s": _r(self.longest_wait_s, 1),
            "roots": [r.to_json() for r in self.roots],
        }


def locks_sample(snap: Snapshot) -> LocksSample:
    """Blocked count, roots with blast radius (largest first) and the longest lock wait,
    straight from the snapshot's blocking graph (not the display tree)."""
    g = snap.graph
    root_pids = list(g.roots) + [p for p in g.cycle_roots if p not in g.roots]
    root_pids.sort(key=lambda p: (-g.blast_radius.get(p, 0), p))
    roots: list[LockRoot] = []
    for pid in root_pids[:ROOT_LIMIT]:
        s = snap.sessions.get(pid)
        hidden = s is not None and s.hidden
        roots.append(
            LockRoot(
                pid=pid,
                blast_radius=g.blast_radius.get(pid, 0),
                direct_waiters=len(g.waiters.get(pid, ())),
                application_name=s.application_name if s else None,
                user=s.usename if s else None,
                state=s.state if s else None,
                xact_age_s=s.xact_age_s if s else None,
                query=None if s is None or hidden else (s.query or "")[:QUERY_CHARS],
                in_cycle=pid in g.in_cycle,
            )
        )
    waits = [
        w.wait.wait_age_s
        for pid in g.blocked_by
        if (w := snap.sessions.get(pid)) is not None
        and w.wait is not None
        and w.wait.wait_age_s is not None
    ]
    return LocksSample(
        blocked_count=g.blocked_count,
        root_count=len(root_pids),
        longest_wait_s=max(waits) if waits else None,
        roots=tuple(roots),
    )


# -- activity --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ActivitySample:
    total: int  # client backends
    max_connections: int
    usable_connections: int
    by_state: Mapping[str, int]
    waiting_on_locks: int
    longest_xact_s: float | None

    @property
    def active(self) -> int:
        return self.by_state.get("active", 0)

    @property
    def idle_in_transaction(self) -> int:
        return sum(self.by_state.get(s, 0) for s in IDLE_IN_TRANSACTION)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.total,
            "total": self.total,
            "max_connections": self.max_connections,
            "usable_connections": self.usable_connections,
            "active": self.active,
            "idle_in_transaction": self.idle_in_transaction,
            "waiting_on_locks": self.waiting_on_locks,
            "longest_xact_s": _r(self.longest_xact_s, 1),
            "by_state": dict(self.by_state),
        }


def activity_sample(snap: Snapshot) -> ActivitySample:
    """Client sessions by state against max_connections (one pass over the sessions)."""
    by_state: dict[str, int] = {}
    total = waiting = 0
    longest: float | None = None
    for s in snap.sessions.values():
        if not s.is_client:
            continue
        total += 1
        state = s.state or "unknown"
        by_state[state] = by_state.get(state, 0) + 1
        if s.wait is not None:
            waiting += 1
        if s.xact_age_s is not None and not s.is_dashboard:
            longest = s.xact_age_s if longest is None else max(longest, s.xact_age_s)
    return ActivitySample(
        total=total,
        max_connections=snap.settings.max_connections,
        usable_connections=snap.settings.usable_connections,
        by_state=dict(sorted(by_state.items(), key=lambda kv: (-kv[1], kv[0]))),
        waiting_on_locks=waiting,
        longest_xact_s=longest,
    )


# -- one cycle -------------------------------------------------------------------------
def build_rows(
    snap: Snapshot,
    pools: Sequence[PoolCounters] | None,
    *,
    service: str,
    instance: str,
) -> list[SampleRow]:
    """The rows of one sampler cycle, stamped with the server's clock (every instance of a
    service then shares one time axis). No pool row when no pool is observed."""
    at = snap.server_now if snap.server_now.tzinfo else snap.server_now.replace(tzinfo=UTC)

    def row(series: str, data: Mapping[str, Any]) -> SampleRow:
        return SampleRow(at, series, service, instance, FULL, data)

    rows = []
    if pools:
        rows.append(row("pool", pool_sample(pools).to_json()))
    rows.append(row("locks", locks_sample(snap).to_json()))
    rows.append(row("activity", activity_sample(snap).to_json()))
    return rows


# -- minute roll-up --------------------------------------------------------------------
def minute_of(at: datetime) -> datetime:
    """The start of the minute `at` falls in."""
    return at.replace(second=0, microsecond=0)


@dataclass
class _Minute:
    start: datetime
    peak: SampleRow
    count: int = 1


@dataclass
class MinuteRollup:
    """Turns a stream of full-resolution rows into one row per minute and series: the
    minute's worst sample (highest `level`; the later one on a tie) with `samples`, how
    many rows the minute had. A minute's row comes out when the first row of a later
    minute of the same series arrives; `flush()` hands out the ones still open."""

    open: dict[tuple[str, str, str], _Minute] = field(default_factory=dict)

    def add(self, row: SampleRow) -> list[SampleRow]:
        if row.resolution_s != FULL:
            return []
        key = (row.series, row.service, row.instance)
        start = minute_of(row.at)
        current = self.open.get(key)
        if current is None:
            self.open[key] = _Minute(start, row)
            return []
        if start < current.start:  # a late row of a minute already handed out: ignore
            return []
        if start == current.start:
            current.count += 1
            if row.level >= current.peak.level:
                current.peak = row
            return []
        self.open[key] = _Minute(start, row)
        return [self._row(current)]

    def flush(self) -> list[SampleRow]:
        out = [self._row(m) for m in self.open.values()]
        self.open.clear()
        return out

    @staticmethod
    def _row(m: _Minute) -> SampleRow:
        p = m.peak
        data = {**p.data, "samples": m.count}
        return SampleRow(m.start, p.series, p.service, p.instance, MINUTE, data)
