"""The fleet view, pure: what one process publishes about its pools, and how the pools
of every live process are grouped, marked stale and totalled for the Pool page, the
`instances` of `/api/pool` and the capacity check.

No I/O here. The publisher (dashboard/history/fleet.py) writes and reads the
`fleet_pools` rows (dashboard/history/fleet_queries.py); the pool registry
(dashboard/pool/registry.py) puts this process's live pools next to what the others
reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from dashboard.pool.capacity import FleetMember, PoolConfig

# An instance is listed while its last report is at most this old (seconds).
LIVE_WINDOW_S = 60.0
# Rows of processes that have not reported for this long are deleted.
KEEP_S = 86400.0
# A report older than this many of its sampler's intervals is marked stale.
STALE_INTERVALS = 3.0
# Longest-held connections published per pool (the JSON row stays bounded).
MAX_PUBLISHED_CONNECTIONS = 200
# Keys of a pool view that only make sense in the process that drew it.
LOCAL_ONLY_KEYS = ("history", "chart", "bar")


# --- what a process publishes -----------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A copy of `value` that PostgreSQL's jsonb accepts: non-finite floats become null
    (json.dumps would write `Infinity`), NUL characters are dropped from strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def publishable(view: Mapping[str, Any], *, interval_s: float) -> dict[str, Any]:
    """One pool as published to the fleet: the `/api/pool` "pools" entry (counters, the
    checkout ledger, waiters) plus its settings, the publisher's sampler interval (what
    "stale" is measured in) and at most `MAX_PUBLISHED_CONNECTIONS` ledger rows."""
    body = {k: v for k, v in view.items() if k not in LOCAL_ONLY_KEYS}
    rows = list(body.get("connections") or [])
    body["connections"] = rows[:MAX_PUBLISHED_CONNECTIONS]
    body["connections_total"] = len(rows)
    body["settings"] = {
        "size": view.get("size"),
        "max_overflow": view.get("max_overflow"),
        "pool_timeout": view.get("timeout_s"),
        "class": view.get("pool_class"),
        "limit": view.get("limit"),
        "recycle_s": view.get("recycle_s"),
        "pre_ping": view.get("pre_ping"),
    }
    body["sample_interval_s"] = interval_s
    out: dict[str, Any] = jsonable(body)
    return out


# --- what was read back -----------------------------------------------------------------


def _int(value: Any, default: int | None = 0) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return default


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


@dataclass(frozen=True)
class PoolFigures:
    """The numbers of one published pool (tolerant of rows written by other versions)."""

    name: str
    pool_class: str
    size: int | None
    max_overflow: int | None
    limit: int | None
    timeout_s: float | None
    recycle_s: float | None
    pre_ping: bool
    checked_out: int
    checked_in: int
    waiting: int
    longest_wait_s: float
    timeouts_total: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PoolFigures:
        settings = d.get("settings")
        s: Mapping[str, Any] = settings if isinstance(settings, Mapping) else {}
        return cls(
            name=str(d.get("name") or "?"),
            pool_class=str(d.get("pool_class") or s.get("class") or "?"),
            size=_int(d.get("size", s.get("size")), None),
            max_overflow=_int(d.get("max_overflow", s.get("max_overflow")), None),
            limit=_int(d.get("limit", s.get("limit")), None),
            timeout_s=_float(d.get("timeout_s", s.get("pool_timeout"))),
            recycle_s=_float(d.get("recycle_s", s.get("recycle_s"))),
            pre_ping=bool(d.get("pre_ping", s.get("pre_ping", False))),
            checked_out=_int(d.get("checked_out")) or 0,
            checked_in=_int(d.get("checked_in")) or 0,
            waiting=_int(d.get("waiting")) or 0,
            longest_wait_s=_float(d.get("longest_wait_s")) or 0.0,
            timeouts_total=_int(d.get("timeouts_total")) or 0,
        )

    def config(self) -> PoolConfig:
        return PoolConfig(
            name=self.name,
            pool_class=self.pool_class,
            size=self.size,
            max_overflow=self.max_overflow,
            limit=self.limit,
            timeout_s=self.timeout_s,
            recycle_s=self.recycle_s,
            pre_ping=self.pre_ping,
        )


@dataclass(frozen=True)
class InstanceReport:
    """One process's last report: its pools as published (the `/api/pool` "pools" shape)."""

    service: str
    instance: str
    reported_at: datetime
    age_s: float  # when read, by the state database's clock
    pools: tuple[Mapping[str, Any], ...]
    this_process: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.instance)

    @property
    def interval_s(self) -> float | None:
        """The publisher's sampler interval, when it published one."""
        for p in self.pools:
            v = _float(p.get("sample_interval_s"))
            if v is not None and v > 0:
                return v
        return None

    def figures(self) -> tuple[PoolFigures, ...]:
        return tuple(PoolFigures.from_json(p) for p in self.pools if isinstance(p, Mapping))

    def aged(self, extra_s: float) -> InstanceReport:
        return replace(self, age_s=self.age_s + max(0.0, extra_s)) if extra_s > 0 else self


def pools_from_json(value: Any) -> tuple[Mapping[str, Any], ...]:
    """The `pools` column as read back: a list of objects (anything else is dropped)."""
    if not isinstance(value, list):
        return ()
    return tuple(p for p in value if isinstance(p, Mapping))


@dataclass(frozen=True)
class FleetReading:
    """The publisher's last look at the shared state (cached for readers)."""

    available: bool
    reason: str | None  # why not available
    instances: tuple[InstanceReport, ...]  # every row reported in the live window
    read_at: float  # time.monotonic() of the read (ages grow from there)
    read_wall: float  # time.time() of the read


class FleetSource(Protocol):
    """What the pool registry reads the fleet from (dashboard/history/fleet.py)."""

    def reading(self) -> FleetReading | None: ...


def is_stale(age_s: float, interval_s: float) -> bool:
    """Older than ~3 sampler intervals (it is listed at all only within the live window)."""
    return age_s > STALE_INTERVALS * max(interval_s, 0.1)


def live_instances(
    reading: FleetReading | None,
    this: InstanceReport,
    *,
    now_mono: float,
    window_s: float = LIVE_WINDOW_S,
) -> list[InstanceReport]:
    """Every process that reported within the window, this one included: its live pools
    replace whatever row it published last."""
    out = [this]
    if reading is not None and reading.available:
        extra = max(0.0, now_mono - reading.read_at)
        for inst in reading.instances:
            if inst.key == this.key:
                continue
            aged = inst.aged(extra)
            if aged.age_s <= window_s:
                out.append(aged)
    return sorted(out, key=lambda i: (i.service, not i.this_process, i.instance))


# --- grouping and totals ----------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    instances: int
    pools: int
    in_use: int
    idle: int
    waiting: int
    timeouts: int
    limit: int | None  # None when some pool has no limit

    @classmethod
    def of(cls, instances: int, pools: Sequence[PoolFigures]) -> Totals:
        limits = [p.limit for p in pools]
        return cls(
            instances=instances,
            pools=len(pools),
            in_use=sum(p.checked_out for p in pools),
            idle=sum(p.checked_in for p in pools),
            waiting=sum(p.waiting for p in pools),
            timeouts=sum(p.timeouts_total for p in pools),
            limit=None if any(v is None for v in limits) else sum(v or 0 for v in limits),
        )


@dataclass(frozen=True)
class InstanceRow:
    report: InstanceReport
    stale: bool
    pools: tuple[PoolFigures, ...]
    totals: Totals

    @property
    def service(self) -> str:
        return self.report.service

    @property
    def instance(self) -> str:
        return self.report.instance

    @property
    def this_process(self) -> bool:
        return self.report.this_process

    @property
    def age_s(self) -> float:
        return self.report.age_s


@dataclass(frozen=True)
class ServiceGroup:
    service: str
    instances: tuple[InstanceRow, ...]
    totals: Totals
    stale: int  # instances marked stale


def instance_row(report: InstanceReport, default_interval_s: float) -> InstanceRow:
    figures = report.figures()
    stale = not report.this_process and is_stale(
        report.age_s, report.interval_s or default_interval_s
    )
    return InstanceRow(report, stale, figures, Totals.of(1, figures))


def group_by_service(
    instances: Iterable[InstanceReport], *, default_interval_s: float
) -> list[ServiceGroup]:
    """Services by name (this process's service first), instances by name within each
    (this process first), with per-instance and per-service totals."""
    by: dict[str, list[InstanceRow]] = {}
    for report in instances:
        by.setdefault(report.service, []).append(instance_row(report, default_interval_s))
    groups = []
    for service, rows in by.items():
        rows.sort(key=lambda r: (not r.this_process, r.instance))
        pools = [p for r in rows for p in r.pools]
        groups.append(
            ServiceGroup(
                service=service,
                instances=tuple(rows),
                totals=Totals.of(len(rows), pools),
                stale=sum(1 for r in rows if r.stale),
            )
        )
    groups.sort(key=lambda g: (not any(r.this_process for r in g.instances), g.service))
    return groups


def instances_json(
    instances: Iterable[InstanceReport], *, default_interval_s: float
) -> list[dict[str, Any]]:
    """`/api/pool` "instances": one entry per live process, grouped by service."""
    out = []
    for group in group_by_service(instances, default_interval_s=default_interval_s):
        for row in group.instances:
            r = row.report
            out.append(
                {
                    "service": r.service,
                    "instance": r.instance,
                    "reported_at": r.reported_at.astimezone(UTC).isoformat(),
                    "age_s": round(r.age_s, 3),
                    "stale": row.stale,
                    "this_process": r.this_process,
                    "pools": [dict(p) for p in r.pools],
                }
            )
    return out


def fleet_members(instances: Iterable[InstanceReport]) -> list[FleetMember]:
    """The capacity check's input: every live process and its pools' settings."""
    return [
        FleetMember(
            service=i.service,
            instance=i.instance,
            pools=tuple(p.config() for p in i.figures()),
            this_process=i.this_process,
        )
        for i in instances
    ]


def unavailable_reason(
    reading: FleetReading | None,
    configured: bool,
    *,
    now_mono: float | None = None,
    window_s: float = LIVE_WINDOW_S,
) -> str | None:
    """Why the fleet view cannot be shown (None when it can). A reading older than the
    live window says nothing about who is live now (no sampler cycle since: the
    publisher reads with every cycle)."""
    if not configured:
        return "no shared state store (the fleet view needs the dashboard's schema)"
    if reading is None:
        return "the first report to the shared state has not completed yet"
    if not reading.available:
        return reading.reason or "the shared state could not be read"
    if now_mono is not None and now_mono - reading.read_at > window_s:
        age = round(now_mono - reading.read_at)
        return f"the shared state was last read {age} s ago (no sampler cycle since)"
    return None
