"""Capacity check: will the pools fit the server, and will they survive its timeouts?

Pure: plain values in, plain-language findings (with the numbers) out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dashboard.formatting import duration
from dashboard.server.model import ServerSettings

LEVELS = ("ok", "info", "warn", "danger")


@dataclass(frozen=True)
class PoolConfig:
    name: str
    pool_class: str
    size: int | None
    max_overflow: int | None
    limit: int | None  # size + max_overflow; None when unlimited or not a QueuePool
    timeout_s: float | None
    recycle_s: float | None  # None: never recycled
    pre_ping: bool


@dataclass(frozen=True)
class FleetMember:
    """One live process of some service, with its pools' settings (the fleet view)."""

    service: str
    instance: str
    pools: tuple[PoolConfig, ...]
    this_process: bool = False


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int
    superuser_reserved_connections: int = 0
    reserved_connections: int = 0
    idle_session_timeout_ms: float | None = None  # 0 = never
    idle_in_transaction_session_timeout_ms: float | None = None  # 0 = never

    @property
    def usable(self) -> int:
        return max(
            0,
            self.max_connections - self.superuser_reserved_connections - self.reserved_connections,
        )


@dataclass(frozen=True)
class Finding:
    level: str  # ok | info | warn | danger
    key: str
    title: str
    text: str
    # where the connection budget's process count came from: "fleet" or "replicas"
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"level": self.level, "key": self.key, "title": self.title, "text": self.text}
        if self.source is not None:
            out["source"] = self.source
        return out


def _secs(ms: float) -> str:
    return duration(ms / 1000.0)


def _process_sum(pools: Sequence[PoolConfig], dashboard_connections: int) -> tuple[int, str]:
    """Connections one process may open, and how: "main 10+5 + 4 for the dashboard"."""
    per_process = sum(p.limit or 1 for p in pools) + dashboard_connections
    parts = " + ".join(
        f"{p.name} {p.size}+{p.max_overflow}" if p.size is not None else f"{p.name} 1"
        for p in pools
    )
    return per_process, f"{parts} + {dashboard_connections} for the dashboard"


def _no_limit(names: list[str]) -> Finding:
    return Finding(
        "danger",
        "budget",
        "No connection limit",
        f"Pool {', '.join(names)} has no upper limit (NullPool, pool_size=0 or "
        "max_overflow=-1): every concurrent request can open a server session, so a "
        "traffic spike becomes 'too many clients already' for everyone on the server.",
    )


def _unlimited(pools: Iterable[PoolConfig]) -> list[str]:
    return [p.name for p in pools if p.pool_class != "StaticPool" and p.limit is None]


def connection_budget(
    pools: list[PoolConfig],
    replicas: int,
    server: ServerLimits | None,
    dashboard_connections: int,
    *,
    fleet: Sequence[FleetMember] | None = None,
    fleet_unavailable: str | None = None,
) -> Finding:
    """Every process's pools at their limit against the server's usable connections.

    With `fleet` (the live processes of every service, dashboard/history/fleet_view.py)
    the processes actually seen are counted, each with its own pool settings (and the
    same reservation for its dashboard as this one); without it, this process's pools
    times DASHBOARD_REPLICAS, saying why (`fleet_unavailable`)."""
    if fleet:
        return _fleet_budget(fleet, server, dashboard_connections)
    unlimited = _unlimited(pools)
    if unlimited:
        return replace(_no_limit(unlimited), source="replicas")
    per_process, parts = _process_sum(pools, dashboard_connections)
    total = per_process * replicas
    formula = f"({parts}) × {replicas} replica{'s' if replicas != 1 else ''} = {total}"
    why = (
        f" because the fleet view is unavailable ({fleet_unavailable})" if fleet_unavailable else ""
    )
    note = f"Counted from DASHBOARD_REPLICAS={replicas}{why}."
    return _judge(formula, total, server, note, "replicas")


def _fleet_budget(
    fleet: Sequence[FleetMember], server: ServerLimits | None, dashboard_connections: int
) -> Finding:
    unlimited = [f"{m.service}/{m.instance} {name}" for m in fleet for name in _unlimited(m.pools)]
    if unlimited:
        return replace(_no_limit(unlimited), source="fleet")
    groups: dict[tuple[str, str], list[int]] = {}
    for m in fleet:
        per_process, parts = _process_sum(m.pools, dashboard_connections)
        groups.setdefault((m.service, parts), []).append(per_process)
    terms = [f"{service} {len(sums)} × ({parts})" for (service, parts), sums in groups.items()]
    total = sum(sum(sums) for sums in groups.values())
    services = {m.service for m in fleet}
    formula = f"{' + '.join(terms)} = {total}"
    note = (
        f"Counted from the fleet view: {len(fleet)} live instance"
        f"{'s' if len(fleet) != 1 else ''} of {len(services)} service"
        f"{'s' if len(services) != 1 else ''} reporting to the shared state "
        "(DASHBOARD_REPLICAS is not used)."
    )
    return _judge(formula, total, server, note, "fleet")


def _judge(
    formula: str, total: int, server: ServerLimits | None, note: str, source: str
) -> Finding:
    if server is None or server.max_connections <= 0:
        return Finding(
            "info",
            "budget",
            "Connection budget",
            f"{formula} connections at most; the server's max_connections is not known yet. {note}",
            source,
        )
    usable = server.usable
    reserved = server.max_connections - usable
    against = (
        f"{usable} usable (max_connections {server.max_connections} − {reserved} reserved "
        "for superusers/roles)"
    )
    if total > usable:
        return Finding(
            "danger",
            "budget",
            "Pools can exceed max_connections",
            f"{formula} > {against}. At full load new connections fail with 'too many "
            "clients already'. Lower pool_size/max_overflow, reduce replicas, or put "
            f"PgBouncer in front. {note}",
            source,
        )
    if total > 0.8 * usable:
        return Finding(
            "warn",
            "budget",
            "Little connection headroom",
            f"{formula} of {against}: {usable - total} left for migrations, cron jobs and "
            f"people with psql. {note}",
            source,
        )
    return Finding(
        "ok", "budget", "Connection budget fits", f"{formula} ≤ {against}. {note}", source
    )


def recycle_vs_idle(pool: PoolConfig, server: ServerLimits | None) -> Finding | None:
    if server is None or server.idle_session_timeout_ms is None:
        return None
    idle_ms = server.idle_session_timeout_ms
    if idle_ms <= 0:
        return Finding(
            "ok",
            f"recycle:{pool.name}",
            f"{pool.name}: idle connections are not closed by the server",
            "idle_session_timeout is 0 (off): pooled idle connections stay open "
            f"(pool_recycle {'off' if pool.recycle_s is None else duration(pool.recycle_s)}).",
        )
    recycle_ms = pool.recycle_s * 1000.0 if pool.recycle_s is not None else None
    if recycle_ms is not None and recycle_ms < idle_ms:
        return Finding(
            "ok",
            f"recycle:{pool.name}",
            f"{pool.name}: pool_recycle is below the server's idle timeout",
            f"pool_recycle {duration(pool.recycle_s)} < idle_session_timeout {_secs(idle_ms)}.",
        )
    recycle_text = "off (-1)" if recycle_ms is None else duration(pool.recycle_s)
    level = "warn" if pool.pre_ping else "danger"
    rescue = (
        "pool_pre_ping catches them at the cost of a round trip"
        if pool.pre_ping
        else "with pool_pre_ping off the request's first query fails"
    )
    return Finding(
        level,
        f"recycle:{pool.name}",
        f"{pool.name}: server closes idle connections before the pool recycles them",
        f"idle_session_timeout is {_secs(idle_ms)} but pool_recycle is {recycle_text}: a "
        f"connection idle in the pool longer than {_secs(idle_ms)} is already closed by the "
        f"server when it is handed out; {rescue}. Set pool_recycle below {_secs(idle_ms)}.",
    )


def idle_in_transaction(server: ServerLimits | None) -> Finding | None:
    if server is None or server.idle_in_transaction_session_timeout_ms is None:
        return None
    ms = server.idle_in_transaction_session_timeout_ms
    if ms <= 0:
        return Finding(
            "info",
            "idle_in_tx",
            "Idle transactions are never ended by the server",
            "idle_in_transaction_session_timeout is 0 (off): a connection leaked inside a "
            "transaction keeps its locks and its pool slot until the application lets go.",
        )
    return Finding(
        "info",
        "idle_in_tx",
        "Idle transactions end after " + _secs(ms),
        f"idle_in_transaction_session_timeout {_secs(ms)}: the server terminates a session "
        "idle in a transaction that long; the holder's next query then fails.",
    )


def pre_ping(pool: PoolConfig) -> Finding:
    if pool.pre_ping:
        return Finding(
            "ok",
            f"pre_ping:{pool.name}",
            f"{pool.name}: pool_pre_ping is on",
            "Dead connections are replaced at checkout.",
        )
    return Finding(
        "warn",
        f"pre_ping:{pool.name}",
        f"{pool.name}: pool_pre_ping is off",
        "A connection closed by a server restart, failover, proxy or idle timeout is handed "
        "to a request as if alive; that request's first query fails. "
        "create_async_engine(..., pool_pre_ping=True) costs one round trip per checkout.",
    )


def pool_timeout(pool: PoolConfig) -> Finding | None:
    t = pool.timeout_s
    if t is None:
        return None
    if t >= 30:
        return Finding(
            "warn",
            f"timeout:{pool.name}",
            f"{pool.name}: requests may wait {duration(t)} for a connection",
            f"pool_timeout is {duration(t)}: when the pool is exhausted a request hangs that "
            "long before 'QueuePool limit ... reached'; proxies and clients often give up "
            "first (gateway timeout, retries that add load). 3–10 s fails faster and clearer.",
        )
    if t < 1:
        return Finding(
            "warn",
            f"timeout:{pool.name}",
            f"{pool.name}: pool_timeout is very short",
            f"pool_timeout is {t:g} s: a brief spike already fails requests.",
        )
    return Finding(
        "ok",
        f"timeout:{pool.name}",
        f"{pool.name}: pool_timeout {duration(t)}",
        "Exhaustion fails fast enough to be noticed.",
    )


def check(
    pools: list[PoolConfig],
    *,
    replicas: int,
    server: ServerLimits | None,
    dashboard_connections: int = 0,
    fleet: Sequence[FleetMember] | None = None,
    fleet_unavailable: str | None = None,
) -> list[Finding]:
    """All findings, worst first. The connection budget counts the `fleet` when given,
    else `replicas` (see `connection_budget`)."""
    if not pools:
        return []
    budget = connection_budget(
        pools,
        replicas,
        server,
        dashboard_connections,
        fleet=fleet,
        fleet_unavailable=fleet_unavailable,
    )
    out: list[Finding] = [budget]
    for p in pools:
        for f in (recycle_vs_idle(p, server), pre_ping(p), pool_timeout(p)):
            if f is not None:
                out.append(f)
    iit = idle_in_transaction(server)
    if iit is not None:
        out.append(iit)
    order = {lvl: i for i, lvl in enumerate(reversed(LEVELS))}
    return sorted(out, key=lambda f: order.get(f.level, 99))


def server_limits_from(settings: ServerSettings | None) -> ServerLimits | None:
    """Adapter for the sampler's `ServerSettings` (dashboard/server/model.py)."""
    if settings is None or not settings.max_connections:
        return None
    timeouts = settings.timeouts

    def ms(name: str) -> float | None:
        t = timeouts.get(name)
        return t.ms if t is not None else None

    return ServerLimits(
        max_connections=int(settings.max_connections),
        superuser_reserved_connections=int(settings.superuser_reserved_connections),
        reserved_connections=int(settings.reserved_connections),
        idle_session_timeout_ms=ms("idle_session_timeout"),
        idle_in_transaction_session_timeout_ms=ms("idle_in_transaction_session_timeout"),
    )
