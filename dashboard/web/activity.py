"""Activity page (connection budget, every session) and its JSON twin.

The session list is sorted and filtered on the server from query parameters
(`?sort=xact_age&dir=desc&state=idle+in+transaction&q=billing`), so the same links work
with htmx and without JavaScript. A bad parameter is a 400 naming it on the JSON twin,
and a message above the (unfiltered) list on the page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import SkipValidation
from litestar.response import Response, Template

from dashboard.context import Dashboard
from dashboard.server.sampler import Sampler
from dashboard.server.session_list import (
    SORT_KEYS,
    STATE_FILTERS,
    SessionQuery,
    SessionQueryError,
    parse_session_query,
    select,
    sort_link,
)
from dashboard.server.snapshot import Snapshot
from dashboard.web.locks import latest_snapshot, panel_context, unavailable
from dashboard.web.render import base_context, is_htmx, render

# Rows drawn on the page (the JSON twin lists every match).
PAGE_LIMIT = 500


def restoring_history(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-history-restore-request") == "true"


def session_query_of(request: Request[Any, Any, Any]) -> SessionQuery:
    """The list's query from the request's parameters; SessionQueryError when bad."""
    return parse_session_query(dict(request.query_params))


def _link(params: dict[str, str]) -> dict[str, str]:
    return {"query": urlencode(params), "dir": params["dir"]}


def session_context(snap: Snapshot, q: SessionQuery) -> dict[str, Any]:
    body = snap.activity_json()
    chosen = select(
        body["sessions"],
        q,
        limit=PAGE_LIMIT,
        blast_radius=snap.blast_radius,
        blocked_by=snap.blocked_by,
    )
    return {
        "sessions": chosen,
        "session_query": q,
        "session_query_string": urlencode(q.params()),
        "sort_keys": SORT_KEYS,
        "sort_links": {key: _link(sort_link(q, key)) for key in SORT_KEYS},
        "state_filters": STATE_FILTERS,
        "page_limit": PAGE_LIMIT,
    }


class ActivityController(Controller):
    @get("/activity", name="activity")
    async def page(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        sampler: NamedDependency[Sampler | None],
    ) -> Template:
        error = ""
        try:
            q = session_query_of(request)
        except SessionQueryError as exc:
            q, error = SessionQuery(), exc.message
        snap = await latest_snapshot(sampler)
        ctx = panel_context(request, dashboard.settings, sampler, snap)
        ctx.update(session_query=q, session_error=error)
        if snap is not None:
            ctx["activity"] = snap.activity_json()
            ctx.update(session_context(snap, q))
        if restoring_history(request):
            # htmx going Back/Forward to a filtered URL (hx-push-url) wants the whole page
            template = Template(
                template_name="activity/index.html",
                context={**base_context(request, "activity"), **ctx},
            )
        else:
            template = render(request, "activity", ctx)
        if error and not is_htmx(request):  # htmx swaps only 2xx: the fragment says it
            template.status_code = 400
        return template

    @get("/api/activity", name="api_activity")
    async def api(
        self, request: Request[Any, Any, Any], sampler: NamedDependency[Sampler | None]
    ) -> Response[dict[str, Any]]:
        try:
            q = session_query_of(request)
        except SessionQueryError as exc:
            raise HTTPException(
                status_code=400,
                detail=exc.message,
                extra={"code": "invalid_parameter", "field": exc.field},
            ) from None
        snap = await latest_snapshot(sampler)
        if sampler is None or snap is None:
            return unavailable(sampler)
        body = snap.activity_json()
        chosen = select(
            body["sessions"], q, blast_radius=snap.blast_radius, blocked_by=snap.blocked_by
        )
        return Response(
            {
                **body,
                "sessions": chosen.rows,
                "sessions_total": chosen.total,
                "sessions_matched": chosen.matched,
                "session_filter": q.to_json(),
                "sampler": sampler.status(),
            }
        )
