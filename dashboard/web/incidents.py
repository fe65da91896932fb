"""Incidents: the page (timeline and list), one incident's page, and their JSON twins.

Read from the state store (they outlive the process that saw them). Bad filters answer
400 naming the parameter, an unknown id 404, and a state database that is down 503 (the
pages then show the banner)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, SkipValidation
from litestar.response import Template
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from dashboard.context import Dashboard
from dashboard.db import describe_error
from dashboard.history.incident_queries import (
    MAX_LIMIT,
    IncidentQuery,
    IncidentRecord,
    IncidentRepository,
)
from dashboard.history.incident_view import (
    RANGES,
    IncidentFilterError,
    detail_context,
    detail_json,
    parse_filters,
    parse_id,
    parse_kind,
    parse_range,
    record_json,
    timeline,
)
from dashboard.history.incidents import KIND_LABELS
from dashboard.web.deps import NO_DATABASE
from dashboard.web.errors import HEADINGS, add_outage_banner
from dashboard.web.render import base_context, render

NO_INCIDENTS = f"{NO_DATABASE}: incidents are kept in the dashboard's state database"


class StateDown(Exception):
    """The state database did not answer (or is not configured)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _repo(dash: Dashboard) -> IncidentRepository:
    if dash.state is None:
        raise StateDown(NO_INCIDENTS)
    return IncidentRepository(dash.state)


def _down(exc: Exception) -> str:
    if isinstance(exc, StateDown):
        return str(exc)
    reason = describe_error(exc) if str(exc) else type(exc).__name__
    return f"the dashboard's state database is unavailable: {reason}"


async def _list(dash: Dashboard, q: IncidentQuery) -> list[IncidentRecord]:
    try:
        return await _repo(dash).list_incidents(q)
    except Exception as exc:
        raise StateDown(_down(exc)) from exc


async def _one(dash: Dashboard, raw_id: str) -> IncidentRecord:
    try:
        incident_id = parse_id(raw_id)
    except IncidentFilterError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    try:
        rec = await _repo(dash).get(incident_id)
    except Exception as exc:
        raise StateDown(_down(exc)) from exc
    if rec is None:
        raise NotFoundException(detail=f"no incident #{incident_id}")
    return rec


def _unavailable(message: str) -> HTTPException:
    return HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=message)


def _error_page(request: Request[Any, Any, Any], status: int, message: str) -> Template:
    ctx = base_context(request, "incidents")
    if status == 503:
        add_outage_banner(ctx, message)
    ctx.update(status_code=status, heading=HEADINGS.get(status, "Error"), message=message)
    ctx["code"] = {400: "bad_request", 404: "not_found", 503: "state_unavailable"}.get(
        status, "error"
    )
    return Template(template_name="error.html", context=ctx, status_code=status)


class IncidentsController(Controller):
    @get("/incidents", name="incidents")
    async def page(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Template:
        """The timeline of the last 24 h or 7 d (`range`), and the list (`kind` filters
        both)."""
        now = _now()
        params = dict(request.query_params)
        ctx: dict[str, Any] = {
            "incidents": [],
            "timeline": None,
            "error": "",
            "range": "24h",
            "ranges": list(RANGES),
            "kind": None,
            "kinds": KIND_LABELS,
            "limit": MAX_LIMIT,
            "poll_s": max(2, round(dashboard.settings.sample_interval_s)),
        }
        status = 200
        try:
            ctx["range"] = parse_range(params.get("range"))
            ctx["kind"] = parse_kind(params.get("kind"))
        except IncidentFilterError as exc:
            ctx["error"], status = str(exc), 400
        if status == 200:
            window = RANGES[ctx["range"]]
            q = IncidentQuery(
                kind=ctx["kind"], since=now - timedelta(seconds=window), limit=MAX_LIMIT
            )
            try:
                records = await _list(dashboard, q)
            except StateDown as exc:
                ctx["error"], status = str(exc), 503
            else:
                ctx["incidents"] = [record_json(r, now) for r in records]
                ctx["timeline"] = timeline(records, now, window)
        template = render(request, "incidents", ctx)
        if status == 503:
            add_outage_banner(template.context, ctx["error"])
        template.status_code = status
        return template

    @get("/incidents/{incident_id:str}", name="incident")
    async def detail(
        self,
        request: Request[Any, Any, Any],
        incident_id: FromPath[str],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
    ) -> Template:
        try:
            rec = await _one(dashboard, incident_id)
        except StateDown as exc:
            return _error_page(request, 503, str(exc))
        except HTTPException as exc:
            return _error_page(request, exc.status_code, exc.detail)
        ctx = base_context(request, "incidents")
        ctx.update(detail_context(rec, _now()))
        return Template(template_name="incidents/detail.html", context=ctx)

    @get("/api/incidents", name="api_incidents")
    async def api(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> dict[str, Any]:
        """`{"incidents": [...]}` newest first; `kind`, `since` (ISO 8601: incidents still
        going on after it), `limit` (1..500, default 100)."""
        try:
            q = parse_filters(dict(request.query_params))
        except IncidentFilterError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        now = _now()
        try:
            records = await _list(dashboard, q)
        except StateDown as exc:
            raise _unavailable(str(exc)) from None
        return {
            "incidents": [record_json(r, now) for r in records],
            "filters": {
                "kind": q.kind,
                "since": q.since.isoformat() if q.since else None,
                "limit": q.limit,
            },
        }

    @get("/api/incidents/{incident_id:str}", name="api_incident")
    async def api_one(
        self, incident_id: FromPath[str], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> dict[str, Any]:
        try:
            rec = await _one(dashboard, incident_id)
        except StateDown as exc:
            raise _unavailable(str(exc)) from None
        return detail_json(rec, _now())
