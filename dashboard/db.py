"""Engines: the dashboard's reserved diagnostics engine, the migration engine, and the
observed application engine (standalone mode only; mounted mode gets the host's).

The diagnostics engine never shares a pool with the application it observes: a tiny pool
of its own, with statement_timeout and lock_timeout set at connection start-up (asyncpg
`server_settings`, so no extra round trip and no statement executed before use).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

DIAGNOSTICS_APP_NAME = "dashboard"
MIGRATION_APP_NAME = "dashboard-migrate"
OBSERVED_APP_NAME = "dashboard-observed"

# Guards on every diagnostics connection: it must never join a lock queue or hang.
DIAGNOSTICS_SERVER_SETTINGS = {
    "application_name": DIAGNOSTICS_APP_NAME,
    "statement_timeout": "5000",
    "lock_timeout": "500",
    "idle_in_transaction_session_timeout": "15000",
}


def create_diagnostics_engine(url: str, *, pool_size: int = 2) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=1,
        pool_timeout=5,
        pool_recycle=600,
        pool_pre_ping=True,
        connect_args={"server_settings": dict(DIAGNOSTICS_SERVER_SETTINGS), "timeout": 5},
    )


def create_migration_engine(
    url: str, *, lock_timeout_ms: int = 3000, statement_timeout_ms: int = 0
) -> AsyncEngine:
    """NullPool: every run gets a brand-new physical connection that has executed nothing."""
    server_settings = {
        "application_name": MIGRATION_APP_NAME,
        "lock_timeout": str(lock_timeout_ms),
        "statement_timeout": str(statement_timeout_ms),
    }
    return create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={"server_settings": server_settings, "timeout": 10},
    )


def create_observed_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    application_name: str = OBSERVED_APP_NAME,
    **kwargs: Any,
) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args={"server_settings": {"application_name": application_name}, "timeout": 10},
        **kwargs,
    )


def describe_error(exc: BaseException) -> str:
    """One line a person can act on, without driver noise."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if isinstance(orig, OSError) or "Connect call failed" in text or "refused" in text.lower():
        return f"connection refused ({text})"
    if type(orig).__name__ == "TimeoutError" or isinstance(orig, TimeoutError):
        return "timed out connecting to the database"
    return text[:300]


# SQLSTATE classes that mean "the server is not there for us": connection exceptions (08)
# and operator intervention (57P: admin/crash shutdown, cannot connect now).
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached (refused, reset, timed out,
    shutting down), as opposed to an error in what was asked of it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError | TimeoutError):
            return True
        if getattr(e, "connection_invalidated", False):
            return True
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        if type(e).__name__ in ("ConnectionDoesNotExistError", "InterfaceError") and (
            "closed" in str(e) or "connection" in str(e).lower()
        ):
            return True
        todo.extend([getattr(e, "orig", None), e.__cause__, e.__context__])
    return False
