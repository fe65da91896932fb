"""Domain errors mapped to HTTP, once (registered on the app): the runs area's errors,
invalid text (400 naming the field), and anything unexpected (a logged, audited 500)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from dashboard.audit.log import AuditEvent
from dashboard.auth.guards import identity_of
from dashboard.auth.identity import peer_address
from dashboard.runs.errors import (
    RunConflict,
    RunError,
    RunForbidden,
    RunInvalid,
    RunNotFound,
    RunUnauthenticated,
    RunUnavailable,
)
from dashboard.validation import InvalidText, scrub

log = logging.getLogger("dashboard.errors")

INTERNAL_ERROR = "internal error (logged)"

STATUS: dict[type[RunError], int] = {
    RunError: 400,
    RunUnauthenticated: 401,
    RunForbidden: 403,
    RunNotFound: 404,
    RunConflict: 409,
    RunInvalid: 422,
    RunUnavailable: 503,
}


def status_for(exc: RunError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 400


def as_http(exc: RunError) -> HTTPException:
    """The same error as Litestar's HTTPException (for the app's one error renderer)."""
    return HTTPException(
        status_code=status_for(exc), detail=exc.message, extra={"code": exc.code, **exc.extra}
    )


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Every error is JSON with a clear `error` line; a person's browser asking for a page
    without a session (password mode) is sent to the login form instead."""
    if (
        exc.status_code == 401
        and request.method == "GET"
        and "text/html" in request.headers.get("accept", "")
        and request.app.state.dashboard.settings.auth_mode == "password"
    ):
        root = request.scope.get("root_path", "")
        return Redirect(path=f"{root}/login", query_params={"next": request.url.path})
    body: dict[str, Any] = {"error": exc.detail, "status_code": exc.status_code}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers or None)


def add_outage_banner(ctx: dict[str, Any], message: str) -> None:
    """A page answering 503 says why in the banner row, unless a banner already does."""
    if not any(b["level"] == "error" for b in ctx["banners"]):
        ctx["banners"].append({"level": "error", "text": message})


HEADINGS = {
    400: "That request cannot be honoured",
    401: "Sign-in needed",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Cannot be planned",
    503: "Database unreachable",
}


def wants_page(request: Request[Any, Any, Any]) -> bool:
    """A person's browser asking for a page (not an API call, not an htmx fragment)."""
    return (
        request.method == "GET"
        and "text/html" in request.headers.get("accept", "")
        and "/api/" not in request.url.path
        and request.headers.get("hx-request") != "true"
    )


def error_page(request: Request[Any, Any, Any], status: int, message: str, code: str) -> Template:
    """The error in the page layout, with the usual banners (and the outage's own)."""
    from dashboard.web.render import base_context

    ctx = base_context(request, "runs")
    if status == 503:
        add_outage_banner(ctx, message)
    ctx.update(
        status_code=status,
        heading=HEADINGS.get(status, "Error"),
        message=message,
        code=code,
    )
    return Template(template_name="error.html", context=ctx, status_code=status)


def run_error_handler(request: Request[Any, Any, Any], exc: RunError) -> Response[Any]:
    """A page for a browser; otherwise `{"error", "status_code", "extra": {"code", ...}}`,
    like every other error."""
    if wants_page(request):
        return error_page(request, status_for(exc), exc.message, exc.code)
    return http_error(request, as_http(exc))


def invalid_text_as_http(exc: InvalidText) -> HTTPException:
    """The one answer to an invalid text field: 400 naming the field (never its value)."""
    return HTTPException(
        status_code=400, detail=exc.message, extra={"code": "invalid_text", "field": exc.field}
    )


def invalid_text_handler(request: Request[Any, Any, Any], exc: InvalidText) -> Response[Any]:
    return http_error(request, invalid_text_as_http(exc))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything no other handler maps: the traceback logged with the request's method and
    path, an `http.error` audit row (written after the answer, never failing it), and a
    500 that tells nothing of the cause."""
    method = scrub(request.scope.get("method", "?"), 20)
    path = scrub(request.scope.get("path", ""), 300)
    log.error("%s %s -> 500: unexpected %s", method, path, type(exc).__name__, exc_info=exc)
    background: BackgroundTask | None = None
    try:
        audit = request.app.state.dashboard.audit
        if audit is not None:
            actor, role, address = "anonymous", None, peer_address(request)
            try:
                ident = identity_of(request)
                actor, address = ident.display, ident.address or address
                role = ident.role if ident.authenticated else None
            except Exception:  # identifying the caller may be what broke: still record it
                log.debug("no identity for the audit row of the error above", exc_info=True)
            event = AuditEvent(
                actor=actor,
                action="http.error",
                outcome="error",
                address=address or None,
                detail={
                    "status_code": 500,
                    "method": method,
                    "path": path,
                    "exception": type(exc).__name__,
                    "role": role,
                },
            )
            background = BackgroundTask(audit.record, event)
    except Exception:  # the app's state is what broke: the log line above stays
        log.exception("could not prepare the audit row of the error above")
    return Response(
        {"error": INTERNAL_ERROR, "status_code": 500}, status_code=500, background=background
    )
