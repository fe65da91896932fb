"""Geometry of the history charts (server-rendered SVG). Pure: points in, shapes out.

One chart per series and range: areas and lines of the series' measures over time
(broken where samples are missing: a gap in the history shows as a gap), reference
lines (the pool's limit, usable connections) when they are within reach of the data,
vertical bands for incidents ([started_at, ended_at or now]), time ticks aligned to
round UTC times, and the y axis with its unit. The template
(templates/history/_chart.html) draws these with CSS classes only: the CSP forbids
inline styles, and the colours follow the stylesheet's dark and light themes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dashboard.history.series import ChartPoint, SeriesSpec

WIDTH = 900
HEIGHT = 210
PAD_LEFT = 58
PAD_RIGHT = 12
PAD_TOP = 26  # the unit sits above the plot
PAD_BOTTOM = 40  # time labels (larger on a phone: see the stylesheet)
MIN_BAND_PX = 2.0
REF_REACH = 0.5  # a reference line is drawn when the data reaches this share of it


@dataclass(frozen=True, slots=True)
class IncidentBand:
    """An incident as a chart marks it (read from the `incidents` table)."""

    id: int
    kind: str
    started_at: datetime
    ended_at: datetime | None  # None while open
    summary: str
    service: str = ""
    instance: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    pos: str  # x (time ticks) or y (value ticks), formatted
    label: str


@dataclass(frozen=True, slots=True)
class Shape:
    cls: str
    points: str  # "x,y x,y ..." for a <polygon> or <polyline>


@dataclass(frozen=True, slots=True)
class Band:
    id: int
    kind: str
    x: str
    width: str
    cls: str
    title: str
    open: bool


@dataclass(frozen=True, slots=True)
class LegendKey:
    label: str
    cls: str
    note: str = ""


@dataclass(frozen=True)
class ChartGeometry:
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    base_y: str
    y_max: float
    unit: str
    areas: tuple[Shape, ...]
    lines: tuple[Shape, ...]
    refs: tuple[Shape, ...]
    bands: tuple[Band, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    legend: tuple[LegendKey, ...]
    label: str  # what a screen reader hears
    empty: bool
    points: int


def _f(v: float) -> str:
    return f"{v:.1f}"


def nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is >= v (at least 1)."""
    if v <= 1:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return float(m * exp)
    return float(10 * exp)


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def time_tick_step(span: timedelta) -> timedelta:
    s = span.total_seconds()
    if s <= 20 * 60:
        return timedelta(minutes=5)
    if s <= 90 * 60:
        return timedelta(minutes=15)
    if s <= 7 * 3600:
        return timedelta(hours=1)
    if s <= 25 * 3600:
        return timedelta(hours=4)
    return timedelta(days=1)


def time_ticks(since: datetime, until: datetime) -> list[tuple[datetime, str]]:
    """Round UTC times within [since, until]: 14:15, or Mon 30 for day ticks."""
    step = time_tick_step(until - since)
    n = math.ceil(since.timestamp() / step.total_seconds())
    out = []
    at = datetime.fromtimestamp(n * step.total_seconds(), UTC)
    while at <= until:
        label = at.strftime("%a %d") if step >= timedelta(days=1) else at.strftime("%H:%M")
        out.append((at, label))
        at += step
    return out


def _css_kind(kind: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", kind.lower())[:40] or "other"


def render_chart(
    spec: SeriesSpec,
    points: Sequence[ChartPoint],
    bands: Sequence[IncidentBand],
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    step_s: int,
    expected_interval_s: float,
    range_label: str = "",
) -> ChartGeometry:
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    span_s = max(1.0, (until - since).total_seconds())
    t0 = since.timestamp()
    measures = spec.measures
    pts = sorted(points, key=lambda p: p.at)

    def x_of(ts: float) -> float:
        return PAD_LEFT + plot_w * min(1.0, max(0.0, (ts - t0) / span_s))

    def at_of(p: ChartPoint) -> float:
        return p.at.timestamp() + step_s / 2

    # stacked values: a "stack" measure sits on the one before it
    stacked: list[list[float | None]] = []
    for p in pts:
        row: list[float | None] = []
        for n, msr in enumerate(measures):
            v = p.values[n] if n < len(p.values) else None
            if msr.style == "stack" and v is not None and n > 0:
                below = row[n - 1]
                v = v + (below or 0.0)
            row.append(v)
        stacked.append(row)

    data_max = max(
        (
            v
            for row in stacked
            for n, v in enumerate(row)
            if v is not None and measures[n].style != "ref"
        ),
        default=0.0,
    )
    ref_max: dict[int, float] = {}
    for n, msr in enumerate(measures):
        if msr.style == "ref":
            vals = [row[n] for row in stacked if row[n] is not None]
            if vals:
                ref_max[n] = max(v for v in vals if v is not None)
    drawn_refs = {n for n, v in ref_max.items() if v > 0 and data_max >= REF_REACH * v}
    y_max = nice_ceiling(max([data_max, 1.0] + [ref_max[n] for n in drawn_refs]))

    def y_of(v: float) -> float:
        return PAD_TOP + plot_h * (1.0 - min(v, y_max) / y_max)

    base_y = y_of(0)
    gap_s = 2.5 * max(float(step_s), expected_interval_s)

    def segments(n: int) -> list[list[int]]:
        """Indexes of consecutive points with a value for measure n, split at gaps."""
        out: list[list[int]] = []
        cur: list[int] = []
        last_at: float | None = None
        for k, row in enumerate(stacked):
            if row[n] is None:
                if cur:
                    out.append(cur)
                cur, last_at = [], None
                continue
            at = at_of(pts[k])
            if last_at is not None and at - last_at > gap_s and cur:
                out.append(cur)
                cur = []
            cur.append(k)
            last_at = at
        if cur:
            out.append(cur)
        return out

    def xy(k: int, n: int) -> str:
        v = stacked[k][n]
        return f"{_f(x_of(at_of(pts[k])))},{_f(y_of(v or 0.0))}"

    areas: list[Shape] = []
    lines: list[Shape] = []
    refs: list[Shape] = []
    legend: list[LegendKey] = []
    for n, msr in enumerate(measures):
        cls = f"hist-m{n} hist-s-{msr.style}"
        if msr.style == "ref":
            if n not in drawn_refs:
                if n in ref_max:
                    legend.append(
                        LegendKey(msr.label, f"hist-key-m{n}", f"{_number(ref_max[n])}, off scale")
                    )
                continue
            legend.append(LegendKey(msr.label, f"hist-key-m{n}", _number(ref_max[n])))
        else:
            legend.append(LegendKey(msr.label, f"hist-key-m{n}"))
        for seg in segments(n):
            if len(seg) == 1:  # a lone point: a short flat stroke so it is visible
                k = seg[0]
                x = x_of(at_of(pts[k]))
                y = y_of(stacked[k][n] or 0.0)
                line = f"{_f(max(PAD_LEFT, x - 1.5))},{_f(y)} {_f(x + 1.5)},{_f(y)}"
            else:
                line = " ".join(xy(k, n) for k in seg)
            if msr.style == "ref":
                refs.append(Shape(f"{cls} hist-ref-line", line))
                continue
            if msr.style == "area":
                first, last = seg[0], seg[-1]
                poly = (
                    f"{_f(x_of(at_of(pts[first])))},{_f(base_y)} {line} "
                    f"{_f(x_of(at_of(pts[last])))},{_f(base_y)}"
                )
                areas.append(Shape(f"{cls} hist-area-fill", poly))
            elif msr.style == "stack" and n > 0:
                under = " ".join(
                    f"{_f(x_of(at_of(pts[k])))},{_f(y_of(stacked[k][n - 1] or 0.0))}"
                    for k in reversed(seg)
                )
                areas.append(Shape(f"{cls} hist-area-fill", f"{line} {under}"))
            lines.append(Shape(f"{cls} hist-line", line))

    end_of_data = min(until, now)
    band_shapes: list[Band] = []
    for b in sorted(bands, key=lambda b: (b.started_at, b.id)):
        start = max(b.started_at, since)
        end = min(b.ended_at or end_of_data, until)
        if end < since or start > until:
            continue
        x1, x2 = x_of(start.timestamp()), x_of(end.timestamp())
        width = max(MIN_BAND_PX, x2 - x1)
        x1 = min(x1, PAD_LEFT + plot_w - width)
        kind = _css_kind(b.kind)
        primary = b.kind in spec.incident_kinds
        started = b.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        until_text = b.ended_at.strftime("%H:%M:%S UTC") if b.ended_at else "still open"
        band_shapes.append(
            Band(
                id=b.id,
                kind=b.kind,
                x=_f(x1),
                width=_f(width),
                cls=f"hist-band hist-band-{kind}"
                + (" hist-band-primary" if primary else " hist-band-other")
                + (" hist-band-open" if b.ended_at is None else ""),
                title=f"{b.kind} #{b.id}: {b.summary} ({started} – {until_text})",
                open=b.ended_at is None,
            )
        )

    x_ticks = tuple(Tick(_f(x_of(at.timestamp())), label) for at, label in time_ticks(since, until))
    y_ticks = tuple(Tick(_f(y_of(v)), _number(v)) for v in (0.0, y_max / 2, y_max))

    values = [p.values[0] for p in pts if p.values and p.values[0] is not None]
    lead = measures[0].label if measures else spec.unit
    if values:
        label = (
            f"{spec.title}{' over ' + range_label if range_label else ''}: {lead} latest "
            f"{_number(values[-1])}, peak {_number(max(values))} {spec.unit}; "
            f"{len(band_shapes)} incident(s) marked"
        )
    else:
        label = f"{spec.title}: no samples in this range"
    return ChartGeometry(
        width=WIDTH,
        height=HEIGHT,
        plot_left=PAD_LEFT,
        plot_right=WIDTH - PAD_RIGHT,
        plot_top=PAD_TOP,
        base_y=_f(base_y),
        y_max=y_max,
        unit=spec.unit,
        areas=tuple(areas),
        lines=tuple(lines),
        refs=tuple(refs),
        bands=tuple(band_shapes),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        legend=tuple(legend),
        label=label,
        empty=not pts,
        points=len(pts),
    )
