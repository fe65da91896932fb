"""The dashboard's own durable state (runs, run log, approvals, audit) in its own schema.

The schema is created and upgraded by the dashboard's own versioned Alembic migrations,
shipped in this package (`versions/`), with their own version table
`<schema>.dashboard_version`. Each area's SQL lives in its repository (`runs/repo.py`,
`audit/repo.py`) on the store's engine (`store.py`). `audit` and `approvals`
are append-only (triggers, and no UPDATE/DELETE/TRUNCATE privilege); only a separate
owner role makes that tamper-proof (`roles.py`, README "Two roles").
"""

from dashboard.state.model import (
    ACTIVE,
    ALL_STATUSES,
    AWAITING_APPROVAL,
    CANCELLED,
    EXPIRED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
)

__all__ = [
    "ACTIVE",
    "ALL_STATUSES",
    "AWAITING_APPROVAL",
    "CANCELLED",
    "EXPIRED",
    "FAILED",
    "INTERRUPTED",
    "QUEUED",
    "REJECTED",
    "RUNNING",
    "SUCCEEDED",
    "TERMINAL",
]
