"""The connection budget and session summaries. Pure: sessions in, JSON-ready dicts out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from dashboard.server.model import Privileges, ServerSettings, Session
from dashboard.server.session_list import (
    STATE_ORDER,
    display_state,
    is_waiting,
    session_rows,
)

TOP_N = 15
LIST_LIMIT = 100


def state_of(s: Session) -> str:
    """The state counted and listed: "waiting" for a lock waiter (PostgreSQL says
    "active"), "unknown" when the role may not see it."""
    return display_state(s)


def top(counter: Counter[str], n: int = TOP_N) -> list[dict[str, Any]]:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"name": k, "count": v} for k, v in items[:n]]


def session_brief(s: Session, database: str | None, query_chars: int = 1000) -> dict[str, Any]:
    return {
        "pid": s.pid,
        "backend_start": s.backend_start.isoformat() if s.backend_start else None,
        "user": s.usename,
        "application_name": s.application_name,
        "client_addr": s.client_addr,
        "database": s.datname,
        "state": s.state,
        "display_state": display_state(s),
        "waiting": is_waiting(s),
        "wait_event_type": s.wait_event_type,
        "wait_event": s.wait_event,
        "xact_age_s": _r(s.xact_age_s),
        "query_age_s": _r(s.query_age_s),
        "state_age_s": _r(s.state_age_s),
        "query": (s.query or "")[:query_chars],
        "is_dashboard": s.is_dashboard,
        "signalable": s.signalable_in(database),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def summarize(
    sessions: Iterable[Session],
    settings: ServerSettings,
    privileges: Privileges,
    *,
    long_query_s: float,
) -> dict[str, Any]:
    """The /api/activity body (without sampling metadata)."""
    all_sessions = list(sessions)
    clients = [s for s in all_sessions if s.is_client]
    database = privileges.database or None
    by_state: Counter[str] = Counter(state_of(s) for s in clients)
    by_type: Counter[str] = Counter((s.backend_type or "unknown") for s in all_sessions)
    by_app: Counter[str] = Counter((s.application_name or "") for s in clients)
    by_user: Counter[str] = Counter((s.usename or "?") for s in clients)
    by_addr: Counter[str] = Counter((s.client_addr or "local socket") for s in clients)
    by_db: Counter[str] = Counter((s.datname or "?") for s in clients)

    idle_tx = [s for s in clients if (s.state or "").startswith("idle in transaction")]
    idle_tx.sort(key=lambda s: -(s.xact_age_s or 0.0))
    long_running = [
        s
        for s in clients
        if s.state == "active" and not s.is_dashboard and (s.query_age_s or 0.0) >= long_query_s
    ]
    long_running.sort(key=lambda s: -(s.query_age_s or 0.0))
    hidden = sum(1 for s in all_sessions if s.hidden)

    usable = settings.usable_connections
    total = len(clients)
    timeouts = {name: t.to_json() for name, t in settings.timeouts.items()}
    warnings = budget_warnings(settings, total, hidden, privileges)
    return {
        "max_connections": settings.max_connections,
        "reserved_connections": settings.superuser_reserved_connections
        + settings.reserved_connections,
        "usable_connections": usable,
        "total": total,
        "free": max(0, usable - total),
        "used_ratio": round(total / usable, 4) if usable else None,
        "all_backends": len(all_sessions),
        "by_state": {k: by_state[k] for k in _ordered_states(by_state)},
        "by_backend_type": dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_application": top(by_app),
        "by_user": top(by_user),
        "by_client_addr": top(by_addr),
        "by_database": top(by_db),
        "idle_in_transaction": [session_brief(s, database) for s in idle_tx[:LIST_LIMIT]],
        "idle_in_transaction_count": len(idle_tx),
        "long_running": [session_brief(s, database) for s in long_running[:LIST_LIMIT]],
        "long_running_count": len(long_running),
        "long_query_s": long_query_s,
        "timeouts": timeouts,
        "hidden_sessions": hidden,
        "privileges": privileges.to_json(),
        "warnings": warnings,
        # every client backend, oldest transaction first (session_list sorts and filters)
        "sessions": session_rows(
            clients, database, query_limit_bytes=settings.track_activity_query_size
        ),
    }


def _ordered_states(counter: Counter[str]) -> list[str]:
    known = [s for s in STATE_ORDER if counter.get(s)]
    return known + sorted(k for k in counter if k not in STATE_ORDER)


def budget_warnings(
    settings: ServerSettings, total: int, hidden: int, privileges: Privileges
) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    idle_tx = settings.timeouts.get("idle_in_transaction_session_timeout")
    if idle_tx is not None and idle_tx.unbounded:
        roles = [r for r, v in idle_tx.role_overrides if v]
        extra = f" (except roles with their own value: {', '.join(roles)})" if roles else ""
        out.append(
            {
                "level": "warn",
                "code": "idle_in_transaction_unbounded",
                "text": "idle_in_transaction_session_timeout is 0: a session left idle in a "
                "transaction holds its locks and its connection forever" + extra + ".",
            }
        )
    usable = settings.usable_connections
    if usable and total >= 0.9 * usable:
        out.append(
            {
                "level": "error" if total >= usable else "warn",
                "code": "connections_nearly_exhausted",
                "text": f"{total} of {usable} usable connections are in use.",
            }
        )
    if hidden and not privileges.sees_all_queries:
        out.append(
            {
                "level": "warn",
                "code": "insufficient_privilege",
                "text": f"The dashboard's role {privileges.role!r} cannot see the details of "
                f"{hidden} session(s) of other users (query, state, ages show as unknown). "
                "Grant it pg_read_all_stats to see them.",
            }
        )
    return out


def budget_bar(by_state: dict[str, int], usable: int) -> list[dict[str, Any]]:
    """Stacked bar segments (percent of the usable slots, or of the total when over),
    for an SVG drawn without inline styles: x and width are attributes, colour a class."""
    total = sum(by_state.values())
    scale = max(usable, total, 1)
    segments: list[dict[str, Any]] = []
    x = 0.0
    for state, count in by_state.items():
        if count <= 0:
            continue
        width = 100.0 * count / scale
        segments.append(
            {
                "state": state,
                "count": count,
                "x": round(x, 3),
                "width": round(width, 3),
                "css": "locks-seg-" + state.replace(" ", "-").replace("(", "").replace(")", ""),
            }
        )
        x += width
    if usable > total:
        segments.append(
            {
                "state": "free",
                "count": usable - total,
                "x": round(x, 3),
                "width": round(100.0 - x, 3),
                "css": "locks-seg-free",
            }
        )
    return segments
