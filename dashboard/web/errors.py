"""Domain errors of the runs area mapped to HTTP, once (registered on the app)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
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


def run_error_handler(request: Request[Any, Any, Any], exc: RunError) -> Response[Any]:
    """`{"error", "status_code", "extra": {"code", ...}}`, like every other error."""
    from dashboard.app import http_error

    return http_error(request, as_http(exc))
