"""Cancel / terminate a backend: `POST /api/backends/{pid}/cancel|terminate` with
`{"backend_start": ...}` (JSON, or a form post from the page), plus the confirmation
fragment the pages open before either action."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, SkipValidation
from litestar.response import Response, Template

from dashboard.audit.log import AuditLog
from dashboard.auth.guards import Guard, identity_of, requires
from dashboard.context import Dashboard
from dashboard.server.actions import (
    BadInput,
    SignalAttempt,
    SignalOutcome,
    parse_backend_start,
    parse_pid,
    record_backend_signal,
    refusal,
    signal_backend,
)
from dashboard.server.sampler import Sampler
from dashboard.validation import scrub
from dashboard.web.bodies import BodyError, parse_json_object
from dashboard.web.locks import action_rights
from dashboard.web.render import base_context, is_htmx

log = logging.getLogger("dashboard.actions")

MAX_BODY = 4096


def logged(role: str, action: str) -> Guard:
    """`requires(role)`, logging refusals: every attempt leaves a trace."""
    inner = requires(role)

    def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        try:
            inner(connection, handler)
        except (NotAuthorizedException, PermissionDeniedException) as exc:
            ident = identity_of(connection)
            log.warning(
                "backend %s by %s (role %s, from %s): pid=%s -> refused (%s): %s",
                action,
                ident.display,
                ident.role,
                ident.address or "?",
                connection.path_params.get("pid"),
                exc.status_code,
                exc.detail,
            )
            raise

    guard.__name__ = f"{action}_requires_{role}"
    return guard


async def read_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadInput("request body too large")
    if not raw.strip():
        raise BadInput('missing body: send JSON {"backend_start": "<timestamp from /api/locks>"}')
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {k: form.get(k) for k in form}
    try:
        return parse_json_object(raw)
    except BodyError as exc:
        raise BadInput(f'{exc}: send {{"backend_start": "..."}}') from None


async def handle_signal(
    request: Request[Any, Any, Any],
    action: str,
    raw_pid: str,
    *,
    dash: Dashboard,
    audit: AuditLog | None,
    sampler: Sampler | None,
) -> Response[Any] | Template:
    ident = identity_of(request)
    pid: int | None = None
    bs_raw: Any = None
    try:
        pid = parse_pid(raw_pid)
        body = await read_body(request)
        bs_raw = body.get("backend_start")
        backend_start = parse_backend_start(bs_raw)
        confirm = body.get("confirm")
        if action == "terminate" and confirm is not None and str(confirm).strip() != str(pid):
            raise BadInput(f"confirmation does not match: type the pid {pid} to terminate it")
    except BadInput as exc:
        outcome = refusal(action, pid, _s(bs_raw), 400, "bad_input", str(exc))
    else:
        if dash.settings.disable_kill:
            outcome = refusal(
                action,
                pid,
                backend_start.isoformat(),
                403,
                "disabled",
                "cancel and terminate are disabled on this dashboard (DASHBOARD_DISABLE_KILL)",
            )
        elif dash.diagnostics is None:
            outcome = refusal(action, pid, backend_start.isoformat(), 503, "error", "no database")
        else:
            outcome = await signal_backend(dash.diagnostics, action, pid, backend_start)
    await record_backend_signal(
        audit,
        SignalAttempt(
            actor=ident.display,
            role=ident.role,
            address=ident.address,
            action=action,
            pid=outcome.pid,
            backend_start=outcome.backend_start,
            outcome=outcome.outcome,
            status_code=outcome.status_code,
            message=outcome.message,
            target=outcome.target,
        ),
    )
    headers: dict[str, str] = {}
    if outcome.ok:
        if sampler is not None:
            try:
                await sampler.refresh()  # the next panel refresh shows the effect
            except Exception:  # the sampler reports its own failures
                log.debug("refresh after %s failed", action, exc_info=True)
        headers["HX-Trigger"] = "locks-changed"
    if is_htmx(request):
        # htmx swaps only 2xx responses: the fragment carries the outcome instead.
        ctx = base_context(request, "locks")
        ctx["result"] = outcome
        return Template(template_name="locks/_action_result.html", context=ctx, headers=headers)
    return Response(outcome.to_json(), status_code=outcome.status_code, headers=headers)


def _s(value: Any) -> str | None:
    """The raw value as it may be echoed and recorded (no NUL reaches the audit row)."""
    return None if value is None else scrub(value, 80)


class BackendsController(Controller):
    @post(
        "/api/backends/{pid:str}/cancel",
        name="backend_cancel",
        guards=[logged("operator", "cancel")],
        status_code=200,
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        pid: FromPath[str],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        audit: NamedDependency[AuditLog | None],
        sampler: NamedDependency[Sampler | None],
    ) -> Response[Any] | Template:
        return await handle_signal(
            request, "cancel", pid, dash=dashboard, audit=audit, sampler=sampler
        )

    @post(
        "/api/backends/{pid:str}/terminate",
        name="backend_terminate",
        guards=[logged("admin", "terminate")],
        status_code=200,
    )
    async def terminate(
        self,
        request: Request[Any, Any, Any],
        pid: FromPath[str],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        audit: NamedDependency[AuditLog | None],
        sampler: NamedDependency[Sampler | None],
    ) -> Response[Any] | Template:
        return await handle_signal(
            request, "terminate", pid, dash=dashboard, audit=audit, sampler=sampler
        )

    @get("/backends/{pid:str}/confirm", name="backend_confirm", include_in_schema=False)
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        pid: FromPath[str],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        sampler: NamedDependency[Sampler | None],
        action: FromQuery[str] = "cancel",
        backend_start: FromQuery[str] = "",
    ) -> Template:
        """The confirmation box (outside the polled panel, so refreshes do not wipe it)."""
        ctx = base_context(request, "locks")
        ctx.update(action_rights(request, dashboard.settings))
        error = ""
        session = None
        try:
            pid_n = parse_pid(pid)
            parse_backend_start(backend_start)
            if action not in ("cancel", "terminate"):
                raise BadInput(f"unknown action {action[:20]!r}")
        except BadInput as exc:
            pid_n, error = 0, str(exc)
        snap = sampler.latest if sampler else None
        if not error and snap is not None:
            session = snap.session(pid_n)
            if session is not None and (
                session.backend_start is None or session.backend_start.isoformat() != backend_start
            ):
                session = None
        ctx.update(
            {
                "pid": pid_n,
                "action": action,
                "backend_start": backend_start,
                "session": session,
                "blast_radius": snap.blast_radius.get(pid_n, 0) if snap else 0,
                "error": error,
            }
        )
        return Template(template_name="locks/_confirm.html", context=ctx)

    @get("/backends/dismiss", name="backend_dismiss", include_in_schema=False)
    async def dismiss(self) -> Response[str]:
        return Response("", media_type="text/html")


__all__ = ["BackendsController", "SignalOutcome"]
