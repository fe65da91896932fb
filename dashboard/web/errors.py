"""Domain errors of the runs area mapped to HTTP, once (registered on the app)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.response import Template
from litestar.exceptions import HTTPException

from dashboard.runs.errors import (
    RunConflict,
    RunError,
    RunForbidden,
    RunInvalid,
    RunNotFound,
    RunUnauthenticated,
    RunUnavailable,
)

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
    if status == 503 and not any(b["level"] == "error" for b in ctx["banners"]):
        ctx["banners"].append({"level": "error", "text": message})
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
    from dashboard.app import http_error

    if wants_page(request):
        return error_page(request, status_for(exc), exc.message, exc.code)
    return http_error(request, as_http(exc))
