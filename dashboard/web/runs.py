"""Runs: request (with preview and typed confirmation), list, detail with live progress,
approve / reject / execute (four-eyes rule), cancel. Controllers parse input, call the
runner or the approval service, pick a template."""

from __future__ import annotations

import json
from typing import Any

from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response, Template
from litestar.status_codes import HTTP_202_ACCEPTED

from dashboard.approvals import rules
from dashboard.approvals.service import Approvals
from dashboard.auth.guards import identity_of, requires
from dashboard.auth.roles import at_least
from dashboard.migrations.plan import DIRECTIONS
from dashboard.migrations.runner import RunError, Runner
from dashboard.state import model as sm
from dashboard.web.render import base_context, dashboard_of, is_htmx, render

MAX_BODY = 16 * 1024


def runner_of(request: Request[Any, Any, Any]) -> Runner:
    runner = dashboard_of(request).runner
    if runner is None:
        raise HTTPException(
            status_code=503,
            detail="no database configured (DASHBOARD_DATABASE_URL is not set): runs are unavailable",
        )
    assert isinstance(runner, Runner)
    return runner


def http_error(exc: RunError) -> HTTPException:
    return HTTPException(
        status_code=exc.status_code, detail=exc.message, extra={"code": exc.code, **exc.extra}
    )


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HTTPException(
            status_code=400,
            detail=f"{name} must be a list of revision ids (use [] for an empty database)",
        )
    if len(value) > 50 or any(len(v) > 200 for v in value):
        raise HTTPException(status_code=400, detail=f"{name} is too long")
    return value


async def parse_run_request(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(status_code=413, detail="request body too large")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise HTTPException(status_code=400, detail="the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(
            status_code=400,
            detail='expected a JSON object: {"direction", "target", "expected_current"}',
        )
    direction = body.get("direction")
    if direction not in DIRECTIONS:
        raise HTTPException(status_code=400, detail='direction must be "upgrade" or "downgrade"')
    target = body.get("target")
    if not isinstance(target, str) or not target.strip():
        raise HTTPException(
            status_code=400, detail="target is required (heads, base, +1, -1 or a revision id)"
        )
    if "expected_current" not in body:
        raise HTTPException(
            status_code=400,
            detail="expected_current is required: the revision(s) you saw the database at "
            "([] for an empty database); the run is refused if it has moved",
        )
    expected = _strings(body["expected_current"], "expected_current")
    sha = body.get("sql_sha256")
    if sha is not None and not isinstance(sha, str):
        raise HTTPException(status_code=400, detail="sql_sha256 must be a string")
    return {
        "direction": direction,
        "target": target.strip(),
        "expected_current": expected,
        "sql_sha256": sha,
    }


def can_run(request: Request[Any, Any, Any]) -> bool:
    return at_least(identity_of(request).role, "operator")


async def read_decision(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The optional body of approve / reject / execute: a JSON object or a form."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(status_code=413, detail="request body too large")
    if not raw.strip():
        return {}
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {k: form.get(k) for k in form if k != "_csrf_token"}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(status_code=400, detail="the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail="expected a JSON object")
    return body


def _opt_text(body: dict[str, Any], name: str, limit: int = 200) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise HTTPException(status_code=400, detail=f"{name} must be text (at most {limit})")
    return value.strip() or None


def decision_version(run: dict[str, Any]) -> str:
    """Changes whenever what the decision box shows changes (see `decisions`)."""
    return f"{run['status']}.{run['approval_state']}"


def decision_context(request: Request[Any, Any, Any], run: dict[str, Any]) -> dict[str, Any]:
    """What this person may do with this run (the page hides the rest)."""
    dash = dashboard_of(request)
    ident = identity_of(request)
    runner = runner_of(request)
    approval = run.get("approval")
    facts = rules.RunFacts(
        id=run["id"],
        status=run["status"],
        requested_by=run["requested_by"],
        approved_by=run["approved_by"],
        expires_at=None,
        decision=approval["decision"] if approval else None,
        decided_by=approval["by"] if approval else None,
    )
    now = runner.clock()
    expires = run.get("expires_at")
    actions = rules.allowed_actions(
        facts,
        ident.name,
        ident.role,
        allow_self=dash.settings.allow_self_approval,
        now=now,
    )
    why: list[str] = []
    if run["status"] == sm.AWAITING_APPROVAL and ident.name is not None:
        if run["approval_state"] == rules.PENDING and not actions["approve"]:
            if ident.name == run["requested_by"]:
                why.append(
                    "You requested this run: a different person with the approver role "
                    "must approve it."
                )
            elif not at_least(ident.role, "approver"):
                why.append(
                    f"Your role ({ident.role}) cannot approve; someone with the approver role must."
                )
        if run["approval_state"] == rules.APPROVED and not actions["execute"]:
            why.append(
                f"Only {run['requested_by']} (requester) or {run['approved_by']} (approver) "
                "can start it."
            )
    return {
        "actions": actions,
        "why_not": why,
        "version": decision_version(run),
        "expires_at": expires,
    }


class RunsController(Controller):
    # -- pages -------------------------------------------------------------------------
    @get("/runs", name="runs")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        ctx: dict[str, Any] = {"runs": [], "error": ""}
        try:
            ctx["runs"] = await runner_of(request).list_runs(limit=100)
        except RunError as exc:
            ctx["error"] = exc.message
        except HTTPException as exc:
            ctx["error"] = exc.detail
        return render(request, "runs", ctx)

    @get("/runs/{run_id:int}", name="run_detail")
    async def detail(self, request: Request[Any, Any, Any], run_id: FromPath[int]) -> Template:
        try:
            run = await runner_of(request).get(run_id)
        except RunError as exc:
            raise http_error(exc) from None
        return self._detail(request, run)

    def _detail(
        self,
        request: Request[Any, Any, Any],
        run: dict[str, Any],
        *,
        error: str = "",
        error_code: str = "",
        status_code: int = 200,
    ) -> Template:
        ctx = base_context(request, "runs")
        ctx.update(
            {
                "run": run,
                "open": run["status"] in sm.OPEN,
                "can_cancel": can_run(request) and run["status"] in sm.OPEN,
                "decision": decision_context(request, run),
                "action_error": error,
                "action_error_code": error_code,
            }
        )
        name = "runs/_detail_panel.html" if is_htmx(request) else "runs/detail.html"
        return Template(template_name=name, context=ctx, status_code=status_code)

    @get("/runs/{run_id:int}/decisions", name="run_decisions", include_in_schema=False)
    async def decisions(
        self, request: Request[Any, Any, Any], run_id: FromPath[int], v: FromQuery[str] = ""
    ) -> Template | Response[str]:
        """The approve / reject / execute box. Polled; answers 204 (htmx keeps what is
        on screen, including a half-typed reason) until what it shows has changed."""
        try:
            run = await runner_of(request).get(run_id, with_log=False)
        except RunError as exc:
            raise http_error(exc) from None
        if v and v == decision_version(run):
            return Response("", status_code=204, media_type="text/html")
        ctx = base_context(request, "runs")
        ctx.update({"run": run, "decision": decision_context(request, run)})
        return Template(template_name="runs/_decisions.html", context=ctx)

    async def _form_action(
        self, request: Request[Any, Any, Any], run_id: int, verb: str
    ) -> Template | Redirect:
        """The page's forms: on success back to the run page (303); on refusal the run
        page again with the reason, under the refusal's own status code."""
        ident = identity_of(request)
        service = Approvals(runner_of(request))
        try:
            body = await read_decision(request)
            if verb == "approve":
                await service.approve(
                    run_id,
                    ident,
                    sql_sha256=_opt_text(body, "sql_sha256", 64),
                    comment=_opt_text(body, "comment", rules.MAX_REASON),
                )
            elif verb == "reject":
                await service.reject(run_id, ident, body.get("reason"))
            else:
                await service.execute(run_id, ident)
        except RunError as exc:
            run = await self._run_or_404(request, run_id)
            return self._detail(
                request,
                run,
                error=exc.message,
                error_code=exc.code,
                status_code=exc.status_code,
            )
        except HTTPException as exc:
            run = await self._run_or_404(request, run_id)
            return self._detail(request, run, error=str(exc.detail), status_code=exc.status_code)
        base = request.scope.get("root_path", "").rstrip("/")
        return Redirect(path=f"{base}/runs/{run_id}", status_code=303)

    async def _run_or_404(self, request: Request[Any, Any, Any], run_id: int) -> dict[str, Any]:
        try:
            return await runner_of(request).get(run_id)
        except RunError as exc:
            raise http_error(exc) from None

    @post(
        "/runs/{run_id:int}/approve",
        name="run_approve_form",
        guards=[requires("approver")],
        status_code=303,
    )
    async def approve_form(
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> Template | Redirect:
        return await self._form_action(request, run_id, "approve")

    @post(
        "/runs/{run_id:int}/reject",
        name="run_reject_form",
        guards=[requires("approver")],
        status_code=303,
    )
    async def reject_form(
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> Template | Redirect:
        return await self._form_action(request, run_id, "reject")

    @post(
        "/runs/{run_id:int}/execute",
        name="run_execute_form",
        guards=[requires("operator")],
        status_code=303,
    )
    async def execute_form(
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> Template | Redirect:
        return await self._form_action(request, run_id, "execute")

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
        try:
            pv = await runner_of(request).preview(direction, target)
            ctx["preview"] = pv.to_json()
        except RunError as exc:
            ctx["plan_error"] = exc.message
            status_code = max(status_code, exc.status_code)
        except HTTPException as exc:
            ctx["plan_error"] = exc.detail
            status_code = exc.status_code
        return Template(template_name="runs/confirm.html", context=ctx, status_code=status_code)

    @post("/runs", name="run_submit", guards=[requires("operator")], status_code=303)
    async def submit_form(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        form = await request.form()
        direction = str(form.get("direction") or "")
        target = str(form.get("target") or "")
        expected = [r for r in str(form.get("expected_current") or "").split(",") if r]
        confirm = str(form.get("confirm") or "").strip()
        sha = str(form.get("sql_sha256") or "") or None
        confirm_value = str(form.get("confirm_value") or "")
        if not confirm or confirm != confirm_value:
            return await self._confirm(
                request,
                direction,
                target,
                error=f"type the target revision ({confirm_value}) exactly to confirm",
                status_code=400,
            )
        ident = identity_of(request)
        runner = runner_of(request)
        try:
            # The typed value must also be what the plan ends at, recomputed server-side.
            _, plan = await runner.plan(direction, target, expected)
            if plan.confirm_value != confirm:
                raise RunError(
                    f"the plan now ends at {plan.confirm_value}, not {confirm}; review it again",
                    code="confirm",
                )
            run = await runner.request(
                actor=ident.display,
                address=ident.address,
                direction=direction,
                target=target,
                expected_current=expected,
                sql_sha256=sha,
            )
        except RunError as exc:
            return await self._confirm(
                request, direction, target, error=exc.message, status_code=exc.status_code
            )
        base = request.scope.get("root_path", "").rstrip("/")
        return Redirect(path=f"{base}/runs/{run['id']}", status_code=303)

    # -- JSON --------------------------------------------------------------------------
    @get("/api/runs", name="api_runs")
    async def api_list(
        self, request: Request[Any, Any, Any], limit: FromQuery[int] = 50
    ) -> dict[str, Any]:
        try:
            runs = await runner_of(request).list_runs(limit=max(1, min(limit, 500)))
        except RunError as exc:
            raise http_error(exc) from None
        return {"runs": runs}

    @get("/api/runs/preview", name="api_run_preview")
    async def api_preview(
        self, request: Request[Any, Any, Any], direction: FromQuery[str], target: FromQuery[str]
    ) -> dict[str, Any]:
        runner = runner_of(request)
        try:
            read = await runner.read_current()
            pv = await runner.preview(direction, target, read.current)
        except RunError as exc:
            raise http_error(exc) from None
        return {"current": read.current, **pv.to_json()}

    @get("/api/runs/{run_id:int}", name="api_run")
    async def api_get(
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> dict[str, Any]:
        try:
            return await runner_of(request).get(run_id)
        except RunError as exc:
            raise http_error(exc) from None

    @post("/api/runs", name="api_run_create", guards=[requires("operator")])
    async def api_create(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        body = await parse_run_request(request)
        ident = identity_of(request)
        try:
            run = await runner_of(request).request(
                actor=ident.display, address=ident.address, **body
            )
        except RunError as exc:
            raise http_error(exc) from None
        return Response(
            {
                "id": run["id"],
                "status": run["status"],
                "sql_sha256": run["sql_sha256"],
                "to": run["to_revs"],
                "from": run["from_revs"],
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
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> dict[str, Any]:
        ident = identity_of(request)
        runner = runner_of(request)
        try:
            row = await runner.cancel(run_id, actor=ident.display, address=ident.address)
        except RunError as exc:
            raise http_error(exc) from None
        return {
            "id": row["id"],
            "status": row["status"],
            "cancel_requested_by": row["cancel_requested_by"],
        }

    @post(
        "/api/runs/{run_id:int}/approve",
        name="api_run_approve",
        guards=[requires("approver")],
        status_code=200,
    )
    async def api_approve(
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> dict[str, Any]:
        """Approve someone else's request: `{"sql_sha256"?: the SQL you reviewed, "comment"?}`."""
        body = await read_decision(request)
        try:
            return await Approvals(runner_of(request)).approve(
                run_id,
                identity_of(request),
                sql_sha256=_opt_text(body, "sql_sha256", 64),
                comment=_opt_text(body, "comment", rules.MAX_REASON),
            )
        except RunError as exc:
            raise http_error(exc) from None

    @post(
        "/api/runs/{run_id:int}/reject",
        name="api_run_reject",
        guards=[requires("approver")],
        status_code=200,
    )
    async def api_reject(
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> dict[str, Any]:
        """Reject someone else's request: `{"reason": "..."}` (required)."""
        body = await read_decision(request)
        try:
            return await Approvals(runner_of(request)).reject(
                run_id, identity_of(request), body.get("reason")
            )
        except RunError as exc:
            raise http_error(exc) from None

    @post(
        "/api/runs/{run_id:int}/execute",
        name="api_run_execute",
        guards=[requires("operator")],
        status_code=202,
    )
    async def api_execute(
        self, request: Request[Any, Any, Any], run_id: FromPath[int]
    ) -> dict[str, Any]:
        """Start an approved run (the requester or the approver), after re-checking the
        approval's pins: SQL SHA-256, revision file SHA-256s, database heads."""
        await read_decision(request)
        try:
            run = await Approvals(runner_of(request)).execute(run_id, identity_of(request))
        except RunError as exc:
            raise http_error(exc) from None
        return {"id": run["id"], "status": run["status"], "approved_by": run["approved_by"]}
