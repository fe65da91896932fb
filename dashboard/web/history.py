"""History: `/api/history` (samples of a series over a time window) and the chart
fragment the Pool, Locks and Activity pages load with htmx (`/history/chart`).

Parameters are checked by dashboard/history/series.py: anything malformed is a 400 that
names the parameter. When the history cannot be read (switched off, no database, the
state database down) the API answers 503 and the fragment shows a banner; the live pages
around it never depend on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import SkipValidation
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_503_SERVICE_UNAVAILABLE

from dashboard.context import Dashboard
from dashboard.history.charts import render_chart
from dashboard.history.reader import HistoryUnavailable
from dashboard.history.samples import MINUTE
from dashboard.history.series import (
    DEFAULT_RANGE,
    RANGES,
    SPECS,
    HistoryQueryError,
    api_point,
    parse_query,
    parse_range,
    parse_series,
)
from dashboard.validation import InvalidText, clean_text

LONG_RANGES = ("6h", "24h", "7d")  # their charts refresh less often


def bad_parameter(exc: HistoryQueryError) -> HTTPException:
    return HTTPException(
        status_code=HTTP_400_BAD_REQUEST,
        detail=exc.message,
        extra={"code": "invalid_parameter", "field": exc.field},
    )


def why_off(dash: Dashboard) -> str:
    """Why this dashboard keeps no history."""
    if dash.state is None:
        return "no database configured (DASHBOARD_DATABASE_URL is not set)"
    if not dash.settings.history:
        return "history is switched off (DASHBOARD_HISTORY=false)"
    return "no server sampler in this dashboard"


def _params(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if isinstance(v, str)}


def _label(params: dict[str, str], field: str) -> str | None:
    try:
        return clean_text(params.get(field), field, max_len=200)
    except InvalidText as exc:
        raise bad_parameter(HistoryQueryError(field, exc.message)) from None


class HistoryController(Controller):
    @get("/api/history", name="api_history")
    async def api(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
    ) -> Response[dict[str, Any]]:
        now = datetime.now(UTC)
        try:
            query = parse_query(_params(request), now=now)
        except HistoryQueryError as exc:
            raise bad_parameter(exc) from None
        history = dashboard.history
        if history is None:
            return _unavailable(why_off(dashboard), query.series)
        try:
            page = await history.reader.rows(query, now=now)
        except HistoryUnavailable as exc:
            return _unavailable(exc.reason, query.series, history.status())
        points = [api_point(r) for r in page.rows]
        return Response(
            {
                **query.echo(),
                "points": points,
                "truncated": page.truncated,
                # the next page of a truncated answer starts here (rows are oldest first)
                "next_since": points[-1]["at"] if page.truncated and points else None,
                "history": history.status(),
            }
        )

    @get("/history/chart", name="history_chart")
    async def chart(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
    ) -> Template:
        """The chart of one series over one named range, as an HTML fragment (SVG, range
        links, a banner when the history cannot be read)."""
        params = _params(request)
        try:
            series = parse_series(params.get("series"))
            range_name = parse_range(params.get("range") or DEFAULT_RANGE)
        except HistoryQueryError as exc:
            raise bad_parameter(exc) from None
        service = _label(params, "service")
        instance = _label(params, "instance")
        if service is None:
            service = dashboard.settings.service_name
        spec = SPECS[series]
        base = request.scope.get("root_path", "").rstrip("/")

        def query(r: str) -> str:
            q = {"series": series, "range": r, "service": service}
            if instance is not None:
                q["instance"] = instance
            return urlencode(q)

        ctx: dict[str, Any] = {
            "base": base,
            "series": series,
            "spec": spec,
            "range_name": range_name,
            "ranges": [{"name": r, "query": query(r), "active": r == range_name} for r in RANGES],
            "self_query": query(range_name),
            "poll_s": 60 if range_name in LONG_RANGES else 10,
            "service": service,
            "instance": instance,
            "chart": None,
            "unavailable": None,
            "gap": None,
        }
        history = dashboard.history
        if history is None:
            ctx["unavailable"] = why_off(dashboard)
            return Template(template_name="history/_chart.html", context=ctx)
        writer = history.writer.status()
        if writer.gap_since is not None:
            ctx["gap"] = {
                "since": writer.gap_since.strftime("%H:%M:%S UTC"),
                "error": writer.last_error,
                "queued": writer.queued,
                "dropped": writer.dropped,
            }
        now = datetime.now(UTC)
        try:
            data = await history.reader.chart(
                series, range_name, now=now, service=service, instance=instance
            )
        except HistoryUnavailable as exc:
            ctx["unavailable"] = exc.reason
            return Template(template_name="history/_chart.html", context=ctx)
        interval = MINUTE if data.resolution_s == MINUTE else history.sample_interval_s
        ctx["chart"] = render_chart(
            spec,
            data.points,
            data.bands,
            since=data.since,
            until=data.until,
            now=data.now,
            step_s=data.step_s,
            expected_interval_s=interval,
            range_label=range_name,
        )
        ctx["resolution"] = "one point a minute" if data.resolution_s == MINUTE else "every sample"
        ctx["bands"] = data.bands
        return Template(template_name="history/_chart.html", context=ctx)


def _unavailable(
    reason: str, series: str, status: dict[str, Any] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        {
            "error": f"history unavailable: {reason}",
            "status_code": HTTP_503_SERVICE_UNAVAILABLE,
            "series": series,
            "history": status,
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
    )
