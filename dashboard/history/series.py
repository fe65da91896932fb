"""What a history request asks for, validated; which rows answer it. Pure: no I/O.

- Ranges are named: `15m`, `1h`, `6h`, `24h`, `7d` (`RANGES`).
- `parse_query()` turns query parameters into a `HistoryQuery`, or raises
  `HistoryQueryError` naming the parameter and what is wrong with it (the web layer
  answers 400 with it).
- `choose_resolution()`: full-resolution rows exist for the last day only; a span longer
  than an hour reads the minute rows (one per minute and process), the rest full rows.
- `SPECS`: what each series' chart draws (which counters, how instances combine: the
  pool's connections add up across the processes of a service; lock waits and sessions
  are the same server seen by every process, so the largest value wins).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from dashboard.history.samples import FULL, MINUTE, SERIES, SampleRow
from dashboard.validation import InvalidText, clean_text

RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
DEFAULT_RANGE = "1h"
FULL_RESOLUTION_KEPT = timedelta(hours=24)  # full-resolution rows are downsampled after this
FULL_SPAN_MAX = timedelta(hours=1)  # longer spans read minute rows
RECENT_TAIL = timedelta(minutes=2)  # minute rows lag: the last minutes come from full rows
MINUTE_SPAN = timedelta(minutes=1)
FUTURE_SLACK = timedelta(seconds=5)  # clock skew tolerated on `since`
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # timestamps a query may name
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
MAX_POINTS = 10_000
CHART_BUCKETS = 240
MAX_LABEL = 200

__all__ = [
    "CHART_BUCKETS",
    "DEFAULT_RANGE",
    "MAX_POINTS",
    "RANGES",
    "SPECS",
    "ChartPoint",
    "HistoryQuery",
    "Piece",
    "HistoryQueryError",
    "Measure",
    "SeriesSpec",
    "api_point",
    "chart_pieces",
    "chart_points",
    "chart_step_s",
    "choose_resolution",
    "parse_query",
    "parse_range",
    "parse_series",
    "parse_time",
    "range_of",
    "row_pieces",
]


class HistoryQueryError(ValueError):
    """A history parameter is missing or malformed: `field` names it, `message` says what
    is wrong (never more than the first 40 characters of the value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _shown(raw: str) -> str:
    return repr(raw[:40] + ("…" if len(raw) > 40 else ""))


def parse_series(raw: str | None) -> str:
    if raw is None or not raw.strip():
        raise HistoryQueryError("series", f"series is required (one of {', '.join(SERIES)})")
    value = raw.strip()
    if value not in SERIES:
        raise HistoryQueryError(
            "series", f"series={_shown(value)} is not one of {', '.join(SERIES)}"
        )
    return value


def parse_range(raw: str | None, *, field: str = "range") -> str:
    """The range's name (one of `RANGES`)."""
    value = (raw or "").strip()
    if value not in RANGES:
        raise HistoryQueryError(field, f"{field}={_shown(value)} is not one of {', '.join(RANGES)}")
    return value


def range_of(name: str) -> timedelta:
    return RANGES[parse_range(name)]


def parse_time(field: str, raw: str) -> datetime:
    """ISO 8601 (`2026-11-30T10:00:00Z`, `…+02:00`, a date); naive means UTC. A `+` of an
    offset that arrived unencoded in a query string (read as a space) is restored."""
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    candidates = [text]
    if " " in text and len(text) > 10:  # 2026-11-30T10:00:00 02:00: the + became a space
        head, _, tail = text.rpartition(" ")
        candidates.append(f"{head}+{tail}")
    for candidate in candidates:
        try:
            value = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        try:
            in_range = EARLIEST <= value < LATEST
        except OverflowError:  # an offset pushing year 1 or 9999 past the edge
            in_range = False
        if not in_range:
            raise HistoryQueryError(
                field,
                f"{field}={_shown(raw)} is out of range ({EARLIEST.year} to {LATEST.year - 1})",
            )
        return value
    raise HistoryQueryError(
        field,
        f"{field}={_shown(raw)} is not an ISO 8601 timestamp (e.g. 2026-11-30T10:00:00Z)",
    )


def _label(params: Mapping[str, str | None], field: str) -> str | None:
    try:
        return clean_text(params.get(field), field, max_len=MAX_LABEL)
    except InvalidText as exc:
        raise HistoryQueryError(field, exc.message) from None


def choose_resolution(since: datetime, until: datetime, now: datetime) -> int:
    """Full rows (0) for a span of at most an hour that lies within the last day (where
    they are kept); minute rows (60) otherwise."""
    if until - since <= FULL_SPAN_MAX and since >= now - FULL_RESOLUTION_KEPT:
        return FULL
    return MINUTE


@dataclass(frozen=True)
class HistoryQuery:
    series: str
    since: datetime
    until: datetime
    resolution_s: int
    range_name: str | None = None
    service: str | None = None
    instance: str | None = None
    limit: int = MAX_POINTS

    @property
    def span(self) -> timedelta:
        return self.until - self.since

    def echo(self) -> dict[str, Any]:
        """The query as the answer repeats it."""
        return {
            "series": self.series,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "range": self.range_name,
            "resolution_s": self.resolution_s,
            "service": self.service,
            "instance": self.instance,
            "limit": self.limit,
        }


def parse_query(
    params: Mapping[str, str | None],
    *,
    now: datetime,
    default_range: str = DEFAULT_RANGE,
) -> HistoryQuery:
    """`series` (required), then the window: `since` (ISO) up to `until` (ISO, default now,
    or `since` + `range` when both are given); or only `range`, ending at `until`/now.
    Neither: the last `default_range`. `service`, `instance` filter; `limit` caps rows."""
    series = parse_series(params.get("series"))
    raw_range = params.get("range")
    range_name = parse_range(raw_range) if raw_range is not None else None
    raw_since, raw_until = params.get("since"), params.get("until")
    since = parse_time("since", raw_since) if raw_since and raw_since.strip() else None
    until = parse_time("until", raw_until) if raw_until and raw_until.strip() else None
    if since is not None and since > now + FUTURE_SLACK:
        raise HistoryQueryError(
            "since", f"since={since.isoformat()} is in the future (now is {now.isoformat()})"
        )
    if since is None:
        end = until or now
        since = end - RANGES[range_name or default_range]
        until = end
    elif until is None:
        until = since + RANGES[range_name] if range_name else now
    if until <= since:
        raise HistoryQueryError("until", "until must be later than since")
    limit = MAX_POINTS
    raw_limit = (params.get("limit") or "").strip()
    if raw_limit:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise HistoryQueryError(
                "limit", f"limit={_shown(raw_limit)} is not a whole number"
            ) from None
        if not 1 <= limit <= MAX_POINTS:
            raise HistoryQueryError("limit", f"limit must be between 1 and {MAX_POINTS}")
    return HistoryQuery(
        series=series,
        since=since,
        until=until,
        resolution_s=choose_resolution(since, until, now),
        range_name=range_name,
        service=_label(params, "service"),
        instance=_label(params, "instance"),
        limit=limit,
    )


@dataclass(frozen=True)
class Piece:
    """Part of a time window and the rows that answer it."""

    resolution_s: int
    since: datetime
    until: datetime
    whole_service: bool = False  # the service rows (WHOLE_SERVICE), not each instance's


def row_pieces(query: HistoryQuery, now: datetime) -> list[Piece]:
    """What `/api/history` reads: the rows at the query's resolution; for minute rows also
    the full rows of the last minutes (the minute still open has no minute row yet)."""
    pieces = [Piece(query.resolution_s, query.since, query.until)]
    if query.resolution_s == MINUTE:
        tail = max(query.since, now - RECENT_TAIL)
        if tail < query.until:
            pieces.append(Piece(FULL, tail, query.until))
    return pieces


def chart_pieces(
    since: datetime,
    until: datetime,
    now: datetime,
    resolution_s: int,
    *,
    instance: str | None,
    last_service_minute: datetime | None,
) -> list[Piece]:
    """What a chart reads. Full rows for short ranges. Over hours and days of a whole
    service: its service rows up to the last minute the retention job has combined, then
    each instance's full rows; without service rows (the job has not run yet), or for one
    instance, the instances' minute rows and the full rows of the last minutes."""
    if resolution_s == FULL:
        return [Piece(FULL, since, until)]
    if instance is None and last_service_minute is not None and last_service_minute >= since:
        joint = min(until, last_service_minute + MINUTE_SPAN)
        pieces = [Piece(MINUTE, since, joint, whole_service=True)]
        if joint < until:
            pieces.append(Piece(FULL, joint, until))
        return pieces
    pieces = [Piece(MINUTE, since, until)]
    tail = max(since, now - RECENT_TAIL)
    if tail < until:
        pieces.append(Piece(FULL, tail, until))
    return pieces


def api_point(row: SampleRow) -> dict[str, Any]:
    """One row as `/api/history` shows it: `at` and the labels, then the sample's data."""
    return {
        **row.data,
        "at": row.at.isoformat(),
        "service": row.service,
        "instance": row.instance,
        "resolution_s": row.resolution_s,
    }


# -- charts ----------------------------------------------------------------------------
Style = Literal["area", "stack", "line", "ref"]
Combine = Literal["sum", "max"]


@dataclass(frozen=True)
class Measure:
    key: str  # a numeric field of the sample's data
    label: str
    combine: Combine  # across the instances of a service
    style: Style  # area from 0; stack on the previous measure; line; ref(erence) line


@dataclass(frozen=True)
class SeriesSpec:
    name: str
    title: str
    unit: str  # what the y axis counts
    measures: tuple[Measure, ...]
    incident_kinds: tuple[str, ...]  # drawn first (others are drawn too, fainter)


SPECS: dict[str, SeriesSpec] = {
    "pool": SeriesSpec(
        "pool",
        "Pool connections",
        "connections",
        (
            Measure("checked_out", "in use", "sum", "area"),
            Measure("waiting", "waiting (stacked on top)", "sum", "stack"),
            Measure("limit", "limit", "sum", "ref"),
        ),
        ("pool_exhausted",),
    ),
    "locks": SeriesSpec(
        "locks",
        "Lock waits",
        "sessions",
        (
            Measure("blocked_count", "waiting on a lock", "max", "area"),
            Measure("max_blast_radius", "behind the largest root", "max", "line"),
        ),
        ("lock_pileup",),
    ),
    "activity": SeriesSpec(
        "activity",
        "Client sessions",
        "connections",
        (
            Measure("total", "client sessions", "max", "area"),
            Measure("active", "active", "max", "line"),
            Measure("idle_in_transaction", "idle in transaction", "max", "line"),
            Measure("usable_connections", "usable connections", "max", "ref"),
        ),
        ("idle_in_transaction",),
    ),
}


@dataclass(frozen=True, slots=True)
class ChartPoint:
    at: datetime  # start of the bucket
    values: tuple[float | None, ...]  # one per measure of the series' spec


def chart_step_s(since: datetime, until: datetime, resolution_s: int) -> int:
    """Bucket width: about `CHART_BUCKETS` buckets over the span, never finer than the
    rows (a second for full rows, a minute for minute rows)."""
    raw = (until - since).total_seconds() / CHART_BUCKETS
    return max(int(raw), resolution_s or 1, 1)


def chart_points(
    rows: Sequence[tuple[float, Sequence[float | None]]], step_s: int
) -> list[ChartPoint]:
    """Bucket rows (bucket number since the epoch, the measures' values) as points."""
    return [
        ChartPoint(datetime.fromtimestamp(b * step_s, UTC), tuple(values)) for b, values in rows
    ]
