"""Audit: the page with filters, its JSON twin, and the CSV and JSON exports.

Both say whether the history is tamper-proof: whether the role the dashboard runs as
could alter audit rows (`StateStore.tamper`, dashboard/state/roles.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import SkipValidation
from litestar.response import Response, Template

from dashboard.audit.query import (
    MAX_LIMIT,
    FilterError,
    entry_json,
    filter_params,
    parse_filters,
    to_csv,
)
from dashboard.audit.repo import AuditQuery, AuditRepository
from dashboard.context import Dashboard
from dashboard.state.store import StateStore
from dashboard.web.deps import NO_AUDIT, audit_reader_of
from dashboard.web.render import render


def filters_of(request: Request[Any, Any, Any], *, default_limit: int = 200) -> AuditQuery:
    try:
        return parse_filters(dict(request.query_params), default_limit=default_limit)
    except FilterError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


async def read_entries(reader: AuditRepository, q: AuditQuery) -> list[dict[str, Any]]:
    return [entry_json(e) for e in await reader.entries(q)]


async def tamper_json(store: StateStore | None) -> dict[str, Any] | None:
    return (await store.tamper_status()).to_json() if store is not None else None


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


class AuditController(Controller):
    @get("/audit", name="audit")
    async def page(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[SkipValidation[Dashboard]]
    ) -> Template:
        """The page answers without a database too: it says why the table is empty."""
        ctx: dict[str, Any] = {
            "entries": [],
            "error": "",
            "facets": {"actor": [], "action": [], "outcome": []},
            "filters": {},
            "query": "",
            "limit": 200,
            "tamper": None,
        }
        status_code = 200
        try:
            q = parse_filters(dict(request.query_params))
        except FilterError as exc:
            ctx["error"], status_code = str(exc), 400
            q = AuditQuery()
        params = filter_params(q)
        ctx.update(filters=params, query=urlencode(params), limit=q.limit)
        reader = audit_reader_of(dashboard)
        try:
            if reader is None:
                ctx["error"], status_code = NO_AUDIT, 503
            else:
                ctx["entries"] = await read_entries(reader, q)
                ctx["facets"] = await reader.facets()
                ctx["tamper"] = await tamper_json(dashboard.state)
        except Exception as exc:  # the state store is down: say so on the page
            ctx["error"] = f"the audit log could not be read: {type(exc).__name__}"
            status_code = 503
        template = render(request, "audit", ctx)
        template.status_code = status_code
        return template

    @get("/api/audit", name="api_audit")
    async def api(
        self,
        request: Request[Any, Any, Any],
        audit_reader: NamedDependency[AuditRepository],
        store: NamedDependency[StateStore],
    ) -> dict[str, Any]:
        q = filters_of(request)
        return {
            "entries": await read_entries(audit_reader, q),
            "filters": filter_params(q),
            "tamper_proof": await tamper_json(store),
        }

    @get("/audit.json", name="audit_json", include_in_schema=False)
    async def export_json(
        self, request: Request[Any, Any, Any], audit_reader: NamedDependency[AuditRepository]
    ) -> Response[str]:
        q = filters_of(request, default_limit=MAX_LIMIT)
        body = json.dumps(
            {"entries": await read_entries(audit_reader, q), "filters": filter_params(q)},
            indent=1,
        )
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="audit-{_stamp()}.json"'},
        )

    @get("/audit.csv", name="audit_csv", include_in_schema=False)
    async def export_csv(
        self, request: Request[Any, Any, Any], audit_reader: NamedDependency[AuditRepository]
    ) -> Response[str]:
        q = filters_of(request, default_limit=MAX_LIMIT)
        return Response(
            to_csv(await audit_reader.entries(q)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="audit-{_stamp()}.csv"'},
        )
