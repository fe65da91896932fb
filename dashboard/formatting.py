"""Pure formatting shared by areas (pages, pool, locks, CLI). Bottom floor: imports nothing
from dashboard."""

from __future__ import annotations

STATE_LABELS = {
    "up_to_date": "Up to date",
    "pending": "Migrations pending",
    "ahead": "Database ahead of scripts",
    "diverged": "Version table inconsistent",
    "uninitialized": "Never migrated",
}


def duration(seconds: float | int | None) -> str:
    """12s, 4m 05s, 2h 03m, 3d 04h; a measured float under 10 s keeps one decimal (0.0s,
    2.5s), whether or not it happens to be whole, so a column of ages reads alike."""
    if seconds is None:
        return "–"
    s = int(max(0, seconds))
    if isinstance(seconds, float) and seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h"


def short_rev(rev: str | None) -> str:
    return rev[:12] if rev else "base"


def truncate_query(query: str | None, limit: int = 300) -> str:
    if not query:
        return ""
    q = " ".join(query.split())
    return q if len(q) <= limit else q[: limit - 1] + "…"


def state_label(state: str) -> str:
    return STATE_LABELS.get(state, state)
