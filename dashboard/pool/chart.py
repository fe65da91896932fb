"""Geometry of the small server-rendered SVG chart (last few minutes of one pool).

Pure: history points in, coordinates out. The template draws them with classes only
(the CSP forbids inline styles), so colours follow the stylesheet's theme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH = 720
HEIGHT = 150
PAD_LEFT = 34
PAD_RIGHT = 8
PAD_TOP = 10
PAD_BOTTOM = 22


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: float  # wall clock
    checked_out: int  # peak since the previous point
    waiting: int  # peak since the previous point
    timeouts_total: int


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def chart(
    points: list[HistoryPoint],
    *,
    now: float,
    window_s: float = 300.0,
    size: int | None,
    limit: int | None,
) -> dict[str, Any]:
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    start = now - window_s
    visible = [p for p in points if p.at >= start]
    peak = max([p.checked_out + p.waiting for p in visible] + [limit or 0, size or 0, 1])
    y_max = max(2, peak)

    def x(at: float) -> float:
        return PAD_LEFT + plot_w * min(1.0, max(0.0, (at - start) / window_s))

    def y(v: float) -> float:
        return PAD_TOP + plot_h * (1.0 - min(v, y_max) / y_max)

    base_y = y(0)
    used = " ".join(f"{_fmt(x(p.at))},{_fmt(y(p.checked_out))}" for p in visible)
    # Waiting is stacked on top of used: the band between the two lines is the queue.
    stacked = " ".join(f"{_fmt(x(p.at))},{_fmt(y(p.checked_out + p.waiting))}" for p in visible)
    waiting_area = ""
    if visible and any(p.waiting for p in visible):
        top = [f"{_fmt(x(p.at))},{_fmt(y(p.checked_out + p.waiting))}" for p in visible]
        bottom = [f"{_fmt(x(p.at))},{_fmt(y(p.checked_out))}" for p in reversed(visible)]
        waiting_area = " ".join(top + bottom)
    used_area = ""
    if visible:
        used_area = " ".join(
            [f"{_fmt(x(visible[0].at))},{_fmt(base_y)}"]
            + [f"{_fmt(x(p.at))},{_fmt(y(p.checked_out))}" for p in visible]
            + [f"{_fmt(x(visible[-1].at))},{_fmt(base_y)}"]
        )
    timeouts: list[dict[str, str]] = []
    prev: HistoryPoint | None = None
    for p in points:
        if prev is not None and p.timeouts_total > prev.timeouts_total and p.at >= start:
            timeouts.append({"x": _fmt(x(p.at)), "n": str(p.timeouts_total - prev.timeouts_total)})
        prev = p
    lines: list[dict[str, str]] = []
    if size:
        lines.append(
            {
                "y": _fmt(y(size)),
                "label": f"size {size}",
                "value": str(size),
                "cls": "pool-grid-size",
            }
        )
    if limit and limit != size:
        lines.append(
            {
                "y": _fmt(y(limit)),
                "label": f"max {limit}",
                "value": str(limit),
                "cls": "pool-grid-limit",
            }
        )
    ticks = []
    for minutes_ago in range(int(window_s // 60), -1, -1):
        ticks.append(
            {
                "x": _fmt(x(now - minutes_ago * 60)),
                "label": "now" if minutes_ago == 0 else f"-{minutes_ago}m",
            }
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "plot_left": PAD_LEFT,
        "plot_right": WIDTH - PAD_RIGHT,
        "base_y": _fmt(base_y),
        "top_y": _fmt(y(y_max)),
        "y_max": y_max,
        "used": used,
        "used_area": used_area,
        "stacked": stacked if waiting_area else "",
        "waiting_area": waiting_area,
        "timeouts": timeouts,
        "lines": lines,
        "ticks": ticks,
        "points": len(visible),
        "label": (
            f"Connections in use over the last {int(window_s // 60)} minutes: "
            f"now {visible[-1].checked_out if visible else 0} in use, "
            f"{visible[-1].waiting if visible else 0} waiting; "
            f"peak {max((p.checked_out for p in visible), default=0)} in use, "
            f"{max((p.waiting for p in visible), default=0)} waiting"
        ),
    }


def capacity_bar(
    size: int | None, limit: int | None, checked_out: int, checked_in: int, waiting: int
) -> dict[str, Any]:
    """Segments of the one-line pool bar: used, idle, free headroom, and the queue.

    The bar spans `limit` slots (or what exists when there is no limit); waiting callers
    are drawn past the end, so a queue is visible at a glance.
    """
    slots = limit if limit else max(1, checked_out + checked_in)
    total = max(1, slots + waiting)
    segs: list[dict[str, Any]] = []
    x = 0.0

    def add(n: int, cls: str, label: str) -> None:
        nonlocal x
        if n <= 0:
            return
        width = 100.0 * n / total
        segs.append({"x": _fmt(x), "width": _fmt(width), "cls": cls, "label": f"{label}: {n}"})
        x += width

    in_size = min(checked_out, size) if size else checked_out
    add(in_size, "pool-seg-used", "in use")
    add(checked_out - in_size, "pool-seg-overflow", "in use (overflow)")
    add(checked_in, "pool-seg-idle", "idle in pool")
    add(max(0, slots - checked_out - checked_in), "pool-seg-free", "not opened yet")
    limit_x = _fmt(x)
    add(waiting, "pool-seg-waiting", "waiting")
    size_x = _fmt(100.0 * size / total) if size and limit and size < limit else None
    return {"segments": segs, "limit_x": limit_x if waiting else None, "size_x": size_x}
