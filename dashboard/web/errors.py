"""Errors mapped to HTTP, once (registered on the app): Litestar's HTTP errors, the runs
area's errors, invalid text (400 naming the field), and anything unexpected (a logged,
audited 500). A person's browser gets a page in the layout (status, a plain sentence, the
request id, a link home); API clients, `/api/` paths and htmx requests get JSON."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import MediaType, Request, Response
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
from dashboard.web.request_id import request_id_of

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
    """A person's browser asking for a page gets the error as a page in the layout (a
    browser without a session, in password mode, is sent to the login form instead); API
    clients, `/api/` paths and htmx requests get JSON with a clear `error` line."""
    if (
        exc.status_code == 401
        and request.method == "GET"
        and wants_page(request)
        and request.app.state.dashboard.settings.auth_mode == "password"
    ):
        root = request.scope.get("root_path", "")
        return Redirect(path=f"{root}/login", query_params={"next": request.url.path})
    if wants_page(request) and not refused(request):
        page = error_page(
            request,
            exc.status_code,
            plain_sentence(request, exc),
            code_of(exc),
            details(exc),
            fallback=json_error(exc),
        )
        if exc.headers:
            page.headers.update(exc.headers)
        return page
    return json_error(exc)


def refused(request: Request[Any, Any, Any]) -> bool:
    """A request whose identity is refused (DASHBOARD_AUTH_MODE=none from afar, ambiguous
    proxy headers) never gets the layout: just the JSON error with the reason."""
    try:
        return identity_of(request).refusal is not None
    except Exception:  # noqa: BLE001 - no identity to be sure of: no layout either
        return True


def json_error(exc: HTTPException) -> Response[Any]:
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
    405: "Not available this way",
    409: "Conflict",
    413: "Request too large",
    422: "Cannot be planned",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Database unreachable",
}

# What a person is told when the error carries only the HTTP reason phrase.
PLAIN = {
    400: "The dashboard could not use this request.",
    401: "Sign in to see this page.",
    403: "Your role does not allow this.",
    409: "This conflicts with what is happening right now: reload and try again.",
    413: "The request is larger than the dashboard accepts.",
    500: "The dashboard failed to answer this request. The error is in its log.",
    503: "The database cannot be reached right now.",
}
CSRF_SENTENCE = (
    "The page's security token is missing or out of date: reload the page and try again."
)
NAV_AREAS = ("migrations", "locks", "activity", "pool", "runs", "incidents", "audit")


def wants_page(request: Request[Any, Any, Any]) -> bool:
    """A person's browser asking for a page: it prefers HTML to JSON (a browser's `Accept`;
    `*/*` and `application/json` mean JSON), and it is neither an `/api/` path nor an htmx
    request (htmx does not swap error answers in: it gets the JSON, as before)."""
    accept = request.headers.get("accept", "")
    if "text/html" not in accept:
        return False
    if "/api/" in request.url.path or request.headers.get("hx-request") == "true":
        return False
    try:
        best = request.accept.best_match(["application/json", "text/html"])
    except Exception:  # noqa: BLE001 - a malformed Accept header: JSON, like any client
        return False
    return best == "text/html"


def plain_sentence(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    """One plain sentence for the page: the error's own message when it has one, else
    what the status means for this request."""
    status = exc.status_code
    detail = str(exc.detail or "").strip()
    if "csrf" in detail.lower():
        return CSRF_SENTENCE
    generic = not detail or detail.lower() == _phrase(status).lower()
    if not generic:
        return sentence(detail)
    path = scrub(request.url.path, 200)
    if status == 404:
        return f"There is no page at {path}."
    if status == 405:
        return f"{path} does not answer {scrub(request.method, 20)} requests."
    return PLAIN.get(status, f"{_phrase(status)}.")


def sentence(text: str) -> str:
    """A message as a sentence, as written (it may start with a user name): only the full
    stop is added."""
    text = text.strip()
    return text if text.endswith((".", "!", "?", ")", ":")) else text + "."


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def code_of(exc: HTTPException) -> str:
    extra = exc.extra if isinstance(exc.extra, dict) else {}
    code = extra.get("code")
    return str(code) if code else _phrase(exc.status_code).lower().replace(" ", "_")


def details(exc: HTTPException) -> list[str]:
    """Litestar's validation errors (`extra` is a list of {key, message}): at most five."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    out: list[str] = []
    for item in extra[:5]:
        if isinstance(item, dict) and item.get("message"):
            key = item.get("key")
            out.append(f"{key}: {item['message']}" if key else str(item["message"]))
    return out


def area_of(path: str) -> str:
    """The navigation entry a path belongs to (highlighted on its error page)."""
    first = path.strip("/").split("/", 1)[0]
    return first if first in NAV_AREAS else ("overview" if not first else "")


def error_page(
    request: Request[Any, Any, Any],
    status: int,
    message: str,
    code: str,
    lines: list[str] | None = None,
    *,
    active: str | None = None,
    fallback: Response[Any] | None = None,
) -> Response[Any]:
    """The error in the page layout: the status, a plain sentence, the request id and a
    link home, rendered here (a page that fails to render falls back to the JSON error).
    A visitor who is not signed in sees no banners (nothing about the databases); a
    refused identity (DASHBOARD_AUTH_MODE=none from afar, ambiguous proxy headers) gets
    the JSON error only."""
    from dashboard.web.render import base_context

    if fallback is None:
        fallback = json_error(
            HTTPException(status_code=status, detail=message, extra={"code": code})
        )
    try:
        ident = identity_of(request)
        if ident.refusal is not None:
            return fallback
        ctx = base_context(request, active if active is not None else area_of(request.url.path))
        if not ident.authenticated:
            ctx["banners"] = []
        elif status == 503:
            add_outage_banner(ctx, message)
        ctx.update(
            status_code=status,
            heading=HEADINGS.get(status, _phrase(status)),
            message=message,
            code=code,
            details=lines or [],
            request_id=request_id_of(request.scope),
        )
        template = Template(template_name="error.html", context=ctx, status_code=status)
        engine = request.app.template_engine
        assert engine is not None
        html = engine.get_template("error.html").render(**template.create_template_context(request))
    except Exception:  # the layout is what broke: the JSON answer still says what happened
        log.exception("could not render the error page for %s", status)
        return fallback
    return Response(html, status_code=status, media_type=MediaType.HTML)


def run_error_handler(request: Request[Any, Any, Any], exc: RunError) -> Response[Any]:
    """A page for a browser; otherwise `{"error", "status_code", "extra": {"code", ...}}`,
    like every other error."""
    if request.method == "GET" and wants_page(request):
        return error_page(
            request,
            status_for(exc),
            sentence(exc.message),
            exc.code,
            active="runs",
            fallback=json_error(as_http(exc)),
        )
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
    answer: Response[Any] = Response({"error": INTERNAL_ERROR, "status_code": 500}, status_code=500)
    if wants_page(request):
        answer = error_page(request, 500, PLAIN[500], "internal_error", fallback=answer)
    answer.background = background
    return answer
