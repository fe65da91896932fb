"""Reading the history back: rows for `/api/history`, buckets and incident bands for charts.

Every failure to reach the state database (or its schema) becomes `HistoryUnavailable`
with a one-line reason: the API answers 503 with it, the chart fragment shows it in a
banner, and nothing else on the page depends on it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from dashboard.db import describe_error
from dashboard.history import sample_queries as q
from dashboard.history.charts import IncidentBand
from dashboard.history.samples import MINUTE, SampleRow
from dashboard.history.series import (
    RANGES,
    SPECS,
    ChartPoint,
    HistoryQuery,
    chart_pieces,
    chart_points,
    chart_step_s,
    choose_resolution,
    row_pieces,
)
from dashboard.state.store import StateStore, StateUnavailable

READ_ERRORS = (SQLAlchemyError, StateUnavailable, OSError, TimeoutError)
READ_TIMEOUT_S = 8.0
BAND_LIMIT = 200
CACHE_ENTRIES = 64  # charts kept (series x range x service x instance)


class HistoryUnavailable(Exception):
    """The history cannot be read now (`reason` says why, in one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StateUnavailable):
        return f"the state database is unavailable: {exc}"
    if isinstance(exc, TimeoutError):
        return "the state database did not answer in time"
    return describe_error(exc) if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class RowsPage:
    rows: list[SampleRow]
    truncated: bool  # more rows matched than the query's limit


@dataclass(frozen=True)
class ChartData:
    series: str
    range_name: str
    since: datetime
    until: datetime
    now: datetime
    step_s: int
    resolution_s: int
    points: list[ChartPoint]
    bands: list[IncidentBand]


def cache_ttl_s(step_s: int) -> float:
    """How long a chart's data is reused: half a bucket, between 2 s and 30 s. However
    many people watch a chart, the database answers it at most this often."""
    return min(30.0, max(2.0, step_s / 2))


class HistoryReader:
    def __init__(self, store: StateStore, *, cache_charts: bool = True) -> None:
        self.store = store
        self.cache_charts = cache_charts
        self._charts: dict[tuple[str, str, str | None, str | None], tuple[float, ChartData]] = {}

    async def rows(self, query: HistoryQuery, *, now: datetime) -> RowsPage:
        stmt = q.range_rows(
            query.series,
            row_pieces(query, now),
            service=query.service,
            instance=query.instance,
            limit=query.limit + 1,
        )
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                await self.store.ensure()
                async with self.store.connect() as conn, conn.begin():
                    await conn.execute(q.NO_JIT)
                    result = (await conn.execute(stmt)).all()
        except READ_ERRORS as exc:
            raise HistoryUnavailable(_reason(exc)) from None
        rows = [
            SampleRow(r.at, r.series, r.service, r.instance, int(r.resolution_s), r.data or {})
            for r in result[: query.limit]
        ]
        return RowsPage(rows, truncated=len(result) > query.limit)

    async def chart(
        self,
        series: str,
        range_name: str,
        *,
        now: datetime,
        service: str | None = None,
        instance: str | None = None,
    ) -> ChartData:
        """Buckets of `series` over the named range up to `now`, and the incidents that
        overlap it (of `service` when given). Reused for `cache_ttl_s` of its bucket."""
        key = (series, range_name, service, instance)
        cached = self._charts.get(key)
        if self.cache_charts and cached is not None and cached[0] > time.monotonic():
            return cached[1]
        spec = SPECS[series]
        since, until = now - RANGES[range_name], now
        resolution = choose_resolution(since, until, now)
        step = chart_step_s(since, until, resolution)
        bands_q = q.incident_bands(since, until, service=service, limit=BAND_LIMIT)
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                await self.store.ensure()
                async with self.store.connect() as conn, conn.begin():
                    await conn.execute(q.NO_JIT)
                    last = None
                    if resolution == MINUTE and instance is None and service is not None:
                        last_q = q.last_service_minute(series, service, since, until)
                        last = (await conn.execute(last_q)).scalar()
                    pieces = chart_pieces(
                        since,
                        until,
                        now,
                        resolution,
                        instance=instance,
                        last_service_minute=last,
                    )
                    buckets = q.chart_buckets(
                        spec, pieces, step_s=step, service=service, instance=instance
                    )
                    rows = (await conn.execute(buckets)).all()
                    band_rows = (await conn.execute(bands_q)).all()
        except READ_ERRORS as exc:
            raise HistoryUnavailable(_reason(exc)) from None
        points = chart_points(
            [(float(r[0]), [None if v is None else float(v) for v in r[1:]]) for r in rows],
            step,
        )
        bands = [
            IncidentBand(
                id=int(b.id),
                kind=b.kind,
                started_at=b.started_at,
                ended_at=b.ended_at,
                summary=b.summary,
                service=b.service,
                instance=b.instance,
            )
            for b in band_rows
        ]
        data = ChartData(series, range_name, since, until, now, step, resolution, points, bands)
        if self.cache_charts:
            if len(self._charts) > CACHE_ENTRIES:
                self._charts.clear()
            self._charts[key] = (time.monotonic() + cache_ttl_s(step), data)
        return data
