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


def format_bytes(n: int | float | None) -> str:
    """A size for people: `812 kB`, `3.4 GB` (powers of 1024, like pg_size_pretty)."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def format_rows(n: int | float | None) -> str:
    """A row estimate for people: `~1.2 M rows`; `unknown` when never analysed."""
    if n is None or n < 0:
        return "unknown"
    if n < 1000:
        return f"~{int(n)}"
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if n < scale * 1000 or unit == "G":
            return f"~{n / scale:.1f} {unit}"
    return f"~{int(n)}"
