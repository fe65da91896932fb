"""Geometry of the small server-rendered SVG chart (last few minutes of one pool):
connections in use on top, callers waiting for a connection in a band of their own below.

Pure: history points in, coordinates out. The template draws them with classes only
(the CSP forbids inline styles), so colours follow the stylesheet's theme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH = 720
NARROW_WIDTH = 360  # drawn for phones: the same text size stays readable when scaled down
PAD_LEFT = 40  # y-axis numbers
PAD_RIGHT = 12
# Two panels, one above the other, sharing the time axis: connections in use (with the
# pool_size and limit lines) on top, callers waiting for a connection in a band of their
# own below. Waiting is never painted over the in-use line, so ordinary use stays calm.
USED_TOP = 28  # room above for the axis title ("connections in use")
USED_BOTTOM = 128
WAIT_TOP = 158  # room above for the band's title
WAIT_BOTTOM = 198
TICK_Y = 222
HEIGHT = 230
MIN_LABEL_GAP = 14  # y-axis numbers closer than this are not drawn (they would overlap)


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
    width: int = WIDTH,
) -> dict[str, Any]:
    plot_w = width - PAD_LEFT - PAD_RIGHT
    start = now - window_s
    visible = [p for p in points if p.at >= start]
    y_max = max([p.checked_out for p in visible] + [limit or 0, size or 0, 2])
    w_max = max([p.waiting for p in visible] + [1])

    def x(at: float) -> float:
        return PAD_LEFT + plot_w * min(1.0, max(0.0, (at - start) / window_s))

    def y(v: float) -> float:  # in-use panel
        return USED_TOP + (USED_BOTTOM - USED_TOP) * (1.0 - min(v, y_max) / y_max)

    def yw(v: float) -> float:  # waiting band
        return WAIT_TOP + (WAIT_BOTTOM - WAIT_TOP) * (1.0 - min(v, w_max) / w_max)

    used = " ".join(f"{_fmt(x(p.at))},{_fmt(y(p.checked_out))}" for p in visible)
    used_area = ""
    if visible:
        used_area = " ".join(
            [f"{_fmt(x(visible[0].at))},{_fmt(y(0))}"]
            + [f"{_fmt(x(p.at))},{_fmt(y(p.checked_out))}" for p in visible]
            + [f"{_fmt(x(visible[-1].at))},{_fmt(y(0))}"]
        )
    any_waiting = any(p.waiting for p in visible)
    waiting = ""
    waiting_area = ""
    if any_waiting:
        waiting = " ".join(f"{_fmt(x(p.at))},{_fmt(yw(p.waiting))}" for p in visible)
        waiting_area = " ".join(
            [f"{_fmt(x(visible[0].at))},{_fmt(yw(0))}"]
            + [f"{_fmt(x(p.at))},{_fmt(yw(p.waiting))}" for p in visible]
            + [f"{_fmt(x(visible[-1].at))},{_fmt(yw(0))}"]
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
    # y-axis numbers: 0, pool_size, the limit and the top, none drawn over another
    y_labels: list[dict[str, str]] = []
    taken: list[float] = []
    for v in (0, limit or 0, size or 0, y_max):
        if v < 0 or (v == 0 and taken):
            continue
        yy = y(v)
        if all(abs(yy - t) >= MIN_LABEL_GAP for t in taken):
            taken.append(yy)
            y_labels.append({"y": _fmt(yy), "value": str(v)})
    w_labels = [{"y": _fmt(yw(0)), "value": "0"}, {"y": _fmt(yw(w_max)), "value": str(w_max)}]
    minutes = int(window_s // 60)
    ticks = []
    for minutes_ago in range(minutes, -1, -1):
        # the first and last labels sit inside the plot's ends, never past the edge
        anchor = "end" if minutes_ago == 0 else "start" if minutes_ago == minutes else "middle"
        ticks.append(
            {
                "x": _fmt(x(now - minutes_ago * 60)),
                "label": "now" if minutes_ago == 0 else f"-{minutes_ago}m",
                "anchor": anchor,
            }
        )
    peak_used = max((p.checked_out for p in visible), default=0)
    peak_wait = max((p.waiting for p in visible), default=0)
    return {
        "width": width,
        "height": HEIGHT,
        "plot_left": PAD_LEFT,
        "plot_right": width - PAD_RIGHT,
        "base_y": _fmt(y(0)),
        "top_y": _fmt(y(y_max)),
        "y_max": y_max,
        "used_title_y": USED_TOP - 10,
        "used": used,
        "used_area": used_area,
        "wait_top_y": _fmt(WAIT_TOP),
        "wait_base_y": _fmt(WAIT_BOTTOM),
        "wait_title_y": WAIT_TOP - 10,
        "wait_max": w_max,
        "waiting": waiting,
        "waiting_area": waiting_area,
        "any_waiting": any_waiting,
        "timeouts": timeouts,
        "lines": lines,
        "y_labels": y_labels,
        "w_labels": w_labels,
        "ticks": ticks,
        "minutes": minutes,
        "tick_y": TICK_Y,
        "points": len(visible),
        "label": (
            f"Connections in use over the last {minutes} minutes: "
            f"now {visible[-1].checked_out if visible else 0} in use, "
            f"{visible[-1].waiting if visible else 0} waiting; "
            f"peak {peak_used} in use, {peak_wait} waiting"
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
