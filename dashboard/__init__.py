"""Schema and pool ops dashboard for async SQLAlchemy + asyncpg + Alembic + PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "instrument_engine", "litestar_mount"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from dashboard.app import create_app as create_app
    from dashboard.pool.instrument import instrument as instrument_engine
    from dashboard.pool.mount import litestar_mount as litestar_mount


def __getattr__(name: str) -> Any:
    # Lazy, so `import dashboard.settings` (CLI start-up, tests) stays light.
    if name == "create_app":
        from dashboard.app import create_app

        return create_app
    if name == "litestar_mount":
        from dashboard.pool.mount import litestar_mount

        return litestar_mount
    if name == "instrument_engine":
        from dashboard.pool.instrument import instrument

        return instrument
    raise AttributeError(name)
