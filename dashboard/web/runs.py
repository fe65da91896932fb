"""Runs: request (with preview and typed confirmation), list, detail with live progress
and an incremental log, cancel. Controllers parse input, call the run service, pick a
template; domain errors become HTTP answers in one handler (web/errors.py)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response, Template
from litestar.status_codes import HTTP_202_ACCEPTED

from dashboard.auth.guards import identity_of, requires
from dashboard.runs.errors import RunError
from dashboard.runs.service import RunService
from dashboard.runs.views import log_json
from dashboard.web.errors import add_outage_banner, status_for
from dashboard.web.render import base_context, render
from dashboard.web.run_decisions import detail_template
from dashboard.web.run_input import can_run, parse_run_form, parse_run_request

# At most this many log lines per incremental read (a client catches up in a few reads).
LOG_PAGE = 1000


def _after(after: int) -> int:
    if after < 0:
        raise HTTPException(status_code=400, detail="after must be a log sequence number >= 0")
    return after


class RunsController(Controller):
    # -- pages -------------------------------------------------------------------------
    @get("/runs", name="runs")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        ctx: dict[str, Any] = {"runs": [], "error": ""}
        dash = request.app.state.dashboard
        status = 200
        if dash.runs is None:
            ctx["error"] = "no database configured (DASHBOARD_DATABASE_URL is not set)"
            status = 503
        else:
            try:
                ctx["runs"] = await dash.runs.list_runs(limit=100)
            except RunError as exc:
                ctx["error"], status = exc.message, status_for(exc)
        page = render(request, "runs", ctx)
        if status == 503:
            add_outage_banner(page.context, ctx["error"])
        page.status_code = status
        return page

    @get("/runs/{run_id:int}", name="run_detail")
    async def detail(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        run_id: FromPath[int],
    ) -> Template:
        return await detail_template(request, runs, run_id)

    @get("/runs/{run_id:int}/log", name="run_log_lines", include_in_schema=False)
    async def log_lines(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        run_id: FromPath[int],
        after: FromQuery[int] = 0,
    ) -> Template | Response[str]:
        """New log lines for the run page (appended); 204 when there are none."""
        entries, last = await runs.log_after(run_id, _after(after), LOG_PAGE)
        if not entries:
            run = await runs.get(run_id, with_log=False)
            if run["status"] not in ("awaiting_approval", "queued", "running"):
                # finished and caught up: htmx stops polling on 286
                return Response("", status_code=286, media_type="text/html")
            return Response("", status_code=204, media_type="text/html")
        ctx = base_context(request, "runs")
        ctx.update({"entries": [log_json(e) for e in entries], "last": last, "run_id": run_id})
        return Template(template_name="runs/_log_lines.html", context=ctx)

    @get("/runs/new", name="run_new")
    async def confirm_page(
        self,
        request: Request[Any, Any, Any],
        direction: FromQuery[str] = "upgrade",
        target: FromQuery[str] = "heads",
    ) -> Template:
        return await self._confirm(request, direction, target, error="", status_code=200)

    async def _confirm(
        self,
        request: Request[Any, Any, Any],
        direction: str,
        target: str,
        *,
        error: str,
        status_code: int,
    ) -> Template:
        ctx = base_context(request, "migrations")
        ctx.update(
            {
                "direction": direction,
                "target": target,
                "preview": None,
                "plan_error": "",
                "error": error,
                "can_run": can_run(request),
            }
        )
        runs: RunService | None = request.app.state.dashboard.runs
        if runs is None:
            ctx["plan_error"] = "no database configured (DASHBOARD_DATABASE_URL is not set)"
            status_code = 503
        else:
            try:
                ctx["preview"] = (await runs.preview(direction, target)).to_json()
            except RunError as exc:
                ctx["plan_error"] = exc.message
                status_code = max(status_code, status_for(exc))
        return Template(template_name="runs/confirm.html", context=ctx, status_code=status_code)

    @post("/runs", name="run_submit", guards=[requires("operator")], status_code=303)
    async def submit_form(
        self, request: Request[Any, Any, Any], runs: NamedDependency[RunService]
    ) -> Template | Redirect:
        try:
            f = parse_run_form(await request.form())
        except HTTPException as exc:
            return await self._confirm(
                request, "upgrade", "heads", error=str(exc.detail), status_code=exc.status_code
            )
        direction, target, expected = f.direction, f.target, f.expected_current
        confirm, sha, confirm_value = f.confirm, f.sql_sha256, f.confirm_value
        if not confirm or confirm != confirm_value:
            return await self._confirm(
                request,
                direction,
                target,
                error=f"type the target revision ({confirm_value}) exactly to confirm",
                status_code=400,
            )
        ident = identity_of(request)
        try:
            # The typed value must also be what the plan ends at, recomputed server-side.
            _, plan = await runs.plan(direction, target, expected)
            if plan.confirm_value != confirm:
                raise RunError(
                    f"the plan now ends at {plan.confirm_value}, not {confirm}; review it again",
                    code="confirm",
                )
            run = await runs.request(
                actor=ident.display,
                address=ident.address,
                direction=direction,
                target=target,
                expected_current=expected,
                sql_sha256=sha,
                acknowledge=f.acknowledge,
            )
        except RunError as exc:
            return await self._confirm(
                request, direction, target, error=exc.message, status_code=status_for(exc)
            )
        base = request.scope.get("root_path", "").rstrip("/")
        return Redirect(path=f"{base}/runs/{run.id}", status_code=303)

    # -- JSON --------------------------------------------------------------------------
    @get("/api/runs", name="api_runs")
    async def api_list(
        self, runs: NamedDependency[RunService], limit: FromQuery[int] = 50
    ) -> dict[str, Any]:
        return {"runs": await runs.list_runs(limit=max(1, min(limit, 500)))}

    @get("/api/runs/preview", name="api_run_preview")
    async def api_preview(
        self, runs: NamedDependency[RunService], direction: FromQuery[str], target: FromQuery[str]
    ) -> dict[str, Any]:
        read = await runs.read_current()
        pv = await runs.preview(direction, target, read.current)
        return {"current": read.current, **pv.to_json()}

    @get("/api/runs/{run_id:int}", name="api_run")
    async def api_get(
        self, runs: NamedDependency[RunService], run_id: FromPath[int]
    ) -> dict[str, Any]:
        return await runs.get(run_id)

    @get("/api/runs/{run_id:int}/log", name="api_run_log")
    async def api_log(
        self, runs: NamedDependency[RunService], run_id: FromPath[int], after: FromQuery[int] = 0
    ) -> dict[str, Any]:
        """`{"entries": [...], "last": SEQ}`: the log lines after `after` (at most 1000)."""
        entries, last = await runs.log_after(run_id, _after(after), LOG_PAGE)
        return {"entries": [log_json(e) for e in entries], "last": last}

    @post("/api/runs", name="api_run_create", guards=[requires("operator")])
    async def api_create(
        self, request: Request[Any, Any, Any], runs: NamedDependency[RunService]
    ) -> Response[dict[str, Any]]:
        body = await parse_run_request(request)
        ident = identity_of(request)
        run = await runs.request(
            actor=ident.display,
            address=ident.address,
            direction=body.direction,
            target=body.target,
            expected_current=body.expected_current,
            sql_sha256=body.sql_sha256,
            acknowledge=body.acknowledge,
        )
        return Response(
            {
                "id": run.id,
                "status": run.status,
                "sql_sha256": run.sql_sha256,
                "to": run.to_revs,
                "from": run.from_revs,
            },
            status_code=HTTP_202_ACCEPTED,
        )

    @post(
        "/api/runs/{run_id:int}/cancel",
        name="api_run_cancel",
        guards=[requires("operator")],
        status_code=202,
    )
    async def api_cancel(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        run_id: FromPath[int],
    ) -> dict[str, Any]:
        ident = identity_of(request)
        run = await runs.cancel(run_id, actor=ident.display, address=ident.address)
        return {"id": run.id, "status": run.status, "cancel_requested_by": run.cancel_requested_by}
