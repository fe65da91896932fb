"""The four-eyes decisions on a run: the decision box, the page's forms, and the JSON
actions (approve / reject / execute). Controllers parse input, call the approval
service, pick a template; refusals are domain errors (web/errors maps them)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response, Template

from dashboard.approvals import rules
from dashboard.approvals.service import Approvals
from dashboard.auth.guards import identity_of, requires
from dashboard.auth.roles import at_least
from dashboard.runs.errors import RunError
from dashboard.runs.service import RunService
from dashboard.runs.views import PAGE_LOG_LINES, step_window
from dashboard.state import model as sm
from dashboard.web.errors import status_for
from dashboard.web.render import base_context, is_htmx
from dashboard.web.run_input import acknowledgements_of, can_run, opt_text, read_decision


def decision_version(run: dict[str, Any]) -> str:
    """Changes whenever what the decision box shows changes (see `decisions`)."""
    return f"{run['status']}.{run['approval_state']}"


def decision_context(
    request: Request[Any, Any, Any], runs: RunService, run: dict[str, Any]
) -> dict[str, Any]:
    """What this person may do with this run (the page hides the rest)."""
    ident = identity_of(request)
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
    actions = rules.allowed_actions(
        facts,
        ident.name,
        ident.role,
        allow_self=runs.settings.allow_self_approval,
        now=runs.clock(),
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
        "expires_at": run.get("expires_at"),
    }


async def detail_template(
    request: Request[Any, Any, Any],
    runs: RunService,
    run_id: int,
    *,
    error: str = "",
    error_code: str = "",
    status_code: int = 200,
) -> Template:
    """The run page (or its htmx panel), with an action's refusal shown on it."""
    panel_only = is_htmx(request)  # the polled panel: the log has its own poll
    if panel_only:
        run, log_total = await runs.get(run_id, with_log=False), 0
        run["log"] = []
    else:
        run, log_total = await runs.page(run_id, PAGE_LOG_LINES)
    progress = run["progress"]
    run["step_window"] = step_window(
        progress.get("steps") or run["plan"].get("steps") or [], progress.get("current_index")
    )
    ctx = base_context(request, "runs")
    ctx.update(
        {
            "run": run,
            "open": run["status"] in sm.OPEN,
            "can_cancel": can_run(request) and run["status"] in sm.OPEN,
            "decision": decision_context(request, runs, run),
            "action_error": error,
            "action_error_code": error_code,
            "log_total": log_total,
            "log_last": run["log"][-1]["seq"] if run["log"] else 0,
        }
    )
    name = "runs/_detail_panel.html" if panel_only else "runs/detail.html"
    return Template(template_name=name, context=ctx, status_code=status_code)


class RunDecisionsController(Controller):
    @get("/runs/{run_id:int}/decisions", name="run_decisions", include_in_schema=False)
    async def decisions(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        run_id: FromPath[int],
        v: FromQuery[str] = "",
    ) -> Template | Response[str]:
        """The approve / reject / execute box. Polled; answers 204 (htmx keeps what is
        on screen, including a half-typed reason) until what it shows has changed."""
        run = await runs.get(run_id, with_log=False)
        if v and v == decision_version(run):
            return Response("", status_code=204, media_type="text/html")
        ctx = base_context(request, "runs")
        ctx.update({"run": run, "decision": decision_context(request, runs, run)})
        return Template(template_name="runs/_decisions.html", context=ctx)

    async def _form_action(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        approvals: NamedDependency[Approvals],
        run_id: int,
        verb: str,
    ) -> Template | Redirect:
        """The page's forms: on success back to the run page (303); on refusal the run
        page again with the reason, under the refusal's own status code."""
        ident = identity_of(request)
        try:
            body = await read_decision(request)
            if verb == "approve":
                await approvals.approve(
                    run_id,
                    ident,
                    sql_sha256=opt_text(body, "sql_sha256", 64),
                    comment=opt_text(body, "comment", rules.MAX_REASON),
                    acknowledge=acknowledgements_of(body),
                )
            elif verb == "reject":
                await approvals.reject(run_id, ident, body.get("reason"))
            else:
                await approvals.execute(run_id, ident)
        except RunError as exc:
            return await detail_template(
                request,
                runs,
                run_id,
                error=exc.message,
                error_code=exc.code,
                status_code=status_for(exc),
            )
        except HTTPException as exc:  # a malformed or oversized form
            return await detail_template(
                request, runs, run_id, error=str(exc.detail), status_code=exc.status_code
            )
        base = request.scope.get("root_path", "").rstrip("/")
        return Redirect(path=f"{base}/runs/{run_id}", status_code=303)

    @post(
        "/runs/{run_id:int}/approve",
        name="run_approve_form",
        guards=[requires("approver")],
        status_code=303,
    )
    async def approve_form(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        approvals: NamedDependency[Approvals],
        run_id: FromPath[int],
    ) -> Template | Redirect:
        return await self._form_action(request, runs, approvals, run_id, "approve")

    @post(
        "/runs/{run_id:int}/reject",
        name="run_reject_form",
        guards=[requires("approver")],
        status_code=303,
    )
    async def reject_form(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        approvals: NamedDependency[Approvals],
        run_id: FromPath[int],
    ) -> Template | Redirect:
        return await self._form_action(request, runs, approvals, run_id, "reject")

    @post(
        "/runs/{run_id:int}/execute",
        name="run_execute_form",
        guards=[requires("operator")],
        status_code=303,
    )
    async def execute_form(
        self,
        request: Request[Any, Any, Any],
        runs: NamedDependency[RunService],
        approvals: NamedDependency[Approvals],
        run_id: FromPath[int],
    ) -> Template | Redirect:
        return await self._form_action(request, runs, approvals, run_id, "execute")

    # -- JSON --------------------------------------------------------------------------
    @post(
        "/api/runs/{run_id:int}/approve",
        name="api_run_approve",
        guards=[requires("approver")],
        status_code=200,
    )
    async def api_approve(
        self,
        request: Request[Any, Any, Any],
        approvals: NamedDependency[Approvals],
        run_id: FromPath[int],
    ) -> dict[str, Any]:
        """Approve someone else's request: `{"sql_sha256"?: the SQL you reviewed, "comment"?,
        "acknowledge"?: [{"revision", "rule", "index"?, "reason"}]}` (data-dependent
        revisions need `{"revision", "rule": "data-dependent", "reason"}`)."""
        body = await read_decision(request)
        return await approvals.approve(
            run_id,
            identity_of(request),
            sql_sha256=opt_text(body, "sql_sha256", 64),
            comment=opt_text(body, "comment", rules.MAX_REASON),
            acknowledge=acknowledgements_of(body),
        )

    @post(
        "/api/runs/{run_id:int}/reject",
        name="api_run_reject",
        guards=[requires("approver")],
        status_code=200,
    )
    async def api_reject(
        self,
        request: Request[Any, Any, Any],
        approvals: NamedDependency[Approvals],
        run_id: FromPath[int],
    ) -> dict[str, Any]:
        """Reject someone else's request: `{"reason": "..."}` (required)."""
        body = await read_decision(request)
        return await approvals.reject(run_id, identity_of(request), body.get("reason"))

    @post(
        "/api/runs/{run_id:int}/execute",
        name="api_run_execute",
        guards=[requires("operator")],
        status_code=202,
    )
    async def api_execute(
        self,
        request: Request[Any, Any, Any],
        approvals: NamedDependency[Approvals],
        run_id: FromPath[int],
    ) -> dict[str, Any]:
        """Start an approved run (the requester or the approver), after re-checking the
        approval's pins: SQL SHA-256, revision file SHA-256s, database heads."""
        await read_decision(request)
        run = await approvals.execute(run_id, identity_of(request))
        return {"id": run["id"], "status": run["status"], "approved_by": run["approved_by"]}
