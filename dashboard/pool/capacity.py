"""Capacity check: will the pools fit the server, and will they survive its timeouts?

Pure: plain values in, plain-language findings (with the numbers) out.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "key": self.key, "title": self.title, "text": self.text}


def _secs(ms: float) -> str:
    return duration(ms / 1000.0)


def connection_budget(
    pools: list[PoolConfig], replicas: int, server: ServerLimits | None, dashboard_connections: int
) -> Finding:
    unlimited = [p.name for p in pools if p.pool_class != "StaticPool" and p.limit is None]
    if unlimited:
        return Finding(
            "danger",
            "budget",
            "No connection limit",
            f"Pool {', '.join(unlimited)} has no upper limit (NullPool, pool_size=0 or "
            "max_overflow=-1): every concurrent request can open a server session, so a "
            "traffic spike becomes 'too many clients already' for everyone on the server.",
        )
    per_process = sum(p.limit or 1 for p in pools)
    parts = " + ".join(
        f"{p.name} {p.size}+{p.max_overflow}" if p.size is not None else f"{p.name} 1"
        for p in pools
    )
    total = (per_process + dashboard_connections) * replicas
    formula = (
        f"({parts} + {dashboard_connections} for the dashboard) × {replicas} "
        f"replica{'s' if replicas != 1 else ''} = {total}"
    )
    if server is None or server.max_connections <= 0:
        return Finding(
            "info",
            "budget",
            "Connection budget",
            f"{formula} connections at most; the server's max_connections is not known yet.",
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
            "PgBouncer in front.",
        )
    if total > 0.8 * usable:
        return Finding(
            "warn",
            "budget",
            "Little connection headroom",
            f"{formula} of {against}: {usable - total} left for migrations, cron jobs and "
            "people with psql.",
        )
    return Finding("ok", "budget", "Connection budget fits", f"{formula} ≤ {against}.")


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
) -> list[Finding]:
    """All findings, worst first."""
    if not pools:
        return []
    out: list[Finding] = [connection_budget(pools, replicas, server, dashboard_connections)]
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
