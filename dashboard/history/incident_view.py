"""Incidents for people and for `/api/incidents`, pure: filters parsed from query
parameters (each bad one named), the JSON shape (field names fixed by DESIGN), the
timeline's bars and lanes, and the Overview card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.formatting import duration
from dashboard.history.incident_queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    IncidentQuery,
    IncidentRecord,
)
from dashboard.history.incidents import KIND_LABELS, KINDS, flatten_tree, summarize

# Time ranges of the Incidents page (its timeline and list).
RANGES: dict[str, float] = {"24h": 86_400.0, "7d": 7 * 86_400.0}
DEFAULT_RANGE = "24h"
MAX_LANES = 12
MIN_BAR_PCT = 0.35  # a short incident still shows as a sliver
MAX_TICK_PCT = 94.0
CARD_RECENT = 5


class IncidentFilterError(ValueError):
    """A query parameter is malformed; the message names it (the HTTP layer answers 400)."""


def _short(raw: str) -> str:
    return repr(raw[:40])


def parse_kind(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    kind = raw.strip()
    if kind not in KINDS:
        raise IncidentFilterError(f"kind={_short(kind)} is not one of {', '.join(KINDS)}")
    return kind


def parse_since(raw: str | None) -> datetime | None:
    """ISO 8601 date or date-time; naive means UTC."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
        value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise IncidentFilterError(
            f"since={_short(raw)} is not an ISO 8601 date or time (e.g. 2026-11-22T10:00Z)"
        ) from None
    if value.year < 1970:
        raise IncidentFilterError(f"since={_short(raw)} is before 1970")
    return value


def parse_limit(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_LIMIT
    try:
        limit = int(raw.strip())
    except ValueError:
        raise IncidentFilterError(f"limit={_short(raw)} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise IncidentFilterError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def parse_range(raw: str | None) -> str:
    if raw is None or not raw.strip():
        return DEFAULT_RANGE
    if raw.strip() not in RANGES:
        raise IncidentFilterError(f"range={_short(raw)} is not one of {', '.join(RANGES)}")
    return raw.strip()


def parse_filters(params: Mapping[str, str]) -> IncidentQuery:
    """`kind`, `since`, `limit` of `/api/incidents` (IncidentFilterError naming the bad one)."""
    return IncidentQuery(
        kind=parse_kind(params.get("kind")),
        since=parse_since(params.get("since")),
        limit=parse_limit(params.get("limit")),
    )


def parse_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise IncidentFilterError(f"incident id {_short(raw)} is not a whole number") from None
    if not 1 <= value < 2**63:
        raise IncidentFilterError(f"incident id {value} is out of range")
    return value


# --- JSON -------------------------------------------------------------------------------------
def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def duration_s(rec: IncidentRecord, now: datetime) -> float:
    end = rec.ended_at or max(now, rec.updated_at)
    return max(0.0, (end - rec.started_at).total_seconds())


def record_json(rec: IncidentRecord, now: datetime) -> dict[str, Any]:
    """One incident as `/api/incidents` lists it (without the peak's tree)."""
    d = duration_s(rec, now)
    return {
        "id": rec.id,
        "kind": rec.kind,
        "kind_label": KIND_LABELS.get(rec.kind, rec.kind),
        "key": rec.key,
        "service": rec.service,
        "instance": rec.instance,
        "started_at": _iso(rec.started_at),
        "ended_at": _iso(rec.ended_at),
        "updated_at": _iso(rec.updated_at),
        "ongoing": rec.open,
        "duration_s": round(d, 3),
        "duration": duration(int(d)),
        "root_pid": rec.root_pid,
        "root": rec.root.to_json() if rec.root else None,
        "peak_blast_radius": rec.peak_blast_radius,
        "peak_at": _iso(rec.peak_at),
        "summary": live_summary(rec, now),
        "note": rec.note,
    }


def live_summary(rec: IncidentRecord, now: datetime) -> str:
    """The stored sentence; for an open incident, retold with its duration up to now (the
    stored one is only as fresh as the last write)."""
    if not rec.open:
        return rec.summary
    return summarize(replace(rec.to_incident(), updated_at=max(now, rec.updated_at)))


def detail_json(rec: IncidentRecord, now: datetime) -> dict[str, Any]:
    """`/api/incidents/{id}`: the listed fields plus what was seen at the peak."""
    body = record_json(rec, now)
    body["peak"] = dict(rec.peak)
    return body


def detail_context(rec: IncidentRecord, now: datetime) -> dict[str, Any]:
    """What the detail page shows: the incident, the tree rows at the peak, the pool's
    ledger and freeze-frame when it is a pool incident."""
    peak = rec.peak
    tree = peak.get("tree")
    return {
        "incident": record_json(rec, now),
        "peak": dict(peak),
        "tree_rows": flatten_tree(tree if isinstance(tree, Mapping) else None),
        "holders": list(peak.get("holders") or []),
        "frame": peak.get("freeze_frame") or None,
    }


# --- the timeline -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    id: int
    kind: str
    lane: int
    x: float  # percent of the width
    width: float
    open: bool
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    lanes: int
    start: datetime
    end: datetime

    @property
    def height(self) -> int:
        """SVG user units: 14 per lane plus a margin."""
        return max(1, self.lanes) * 14 + 4


def timeline(records: Sequence[IncidentRecord], now: datetime, window_s: float) -> Timeline:
    """One bar per incident over the window ending `now`, in lanes so that bars overlapping
    in time do not cover each other (greedy: the first lane free at its start)."""
    start = now - timedelta(seconds=window_s)
    span = max(1.0, window_s)
    lane_ends: list[datetime] = []
    bars: list[Bar] = []
    for rec in sorted(records, key=lambda r: (r.started_at, r.id)):
        end = rec.ended_at or max(now, rec.updated_at)
        if end < start or rec.started_at > now:
            continue
        lane = next((i for i, e in enumerate(lane_ends) if e <= rec.started_at), None)
        if lane is None:
            if len(lane_ends) < MAX_LANES:
                lane_ends.append(end)
                lane = len(lane_ends) - 1
            else:
                lane = min(range(len(lane_ends)), key=lambda i: lane_ends[i])
        lane_ends[lane] = max(lane_ends[lane], end)
        x0 = max(0.0, (rec.started_at - start).total_seconds() / span * 100)
        x1 = min(100.0, (end - start).total_seconds() / span * 100)
        width = max(MIN_BAR_PCT, x1 - x0)
        x0 = min(x0, 100.0 - width)
        label = KIND_LABELS.get(rec.kind, rec.kind)
        when = "ongoing" if rec.open else f"ended {rec.ended_at:%Y-%m-%d %H:%M:%S} UTC"
        bars.append(
            Bar(
                id=rec.id,
                kind=rec.kind,
                lane=lane,
                x=round(x0, 3),
                width=round(width, 3),
                open=rec.open,
                title=f"#{rec.id} {label}, {when}: {rec.summary}",
            )
        )
    return Timeline(tuple(bars), tuple(ticks(start, now, window_s)), len(lane_ends), start, now)


def ticks(start: datetime, end: datetime, window_s: float) -> list[Tick]:
    """Every 3 hours over a day or less, every day beyond, on round UTC times."""
    span = max(1.0, (end - start).total_seconds())
    if window_s > 86_400:
        step, fmt = timedelta(days=1), "%a %d %b"
        t = start.replace(hour=0, minute=0, second=0, microsecond=0) + step
    else:
        step, fmt = timedelta(hours=3), "%H:%M"
        t = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        while t.hour % 3:
            t += timedelta(hours=1)
    out: list[Tick] = []
    while t < end:
        x = round((t - start).total_seconds() / span * 100, 3)
        if x <= MAX_TICK_PCT:  # beyond, the label would run into "now" at the right edge
            out.append(Tick(x, t.strftime(fmt)))
        t += step
    return out


# --- the Overview card ------------------------------------------------------------------------
def card(records: Sequence[IncidentRecord], now: datetime) -> dict[str, Any]:
    """Open incidents first, then the last few that ended (records: the last 24 h)."""
    items = [record_json(r, now) for r in records]
    return {
        "open": [i for i in items if i["ongoing"]],
        "recent": [i for i in items if not i["ongoing"]][:CARD_RECENT],
        "error": None,
    }
