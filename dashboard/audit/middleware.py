"""Every refused attempt leaves an audit row, even when nothing else wrote one.

Wraps every route. While a request is handled, audit rows written by the handler (a run
request refused by the runner, a backend signal, a login) are counted through the
`audit_marks` context variable. When the response is a refusal of an unsafe request
(any 4xx: missing CSRF token, no identity, wrong role, conflict, bad body, too large) and
nothing was recorded for it yet, one `denied` (401/403) or `refused` row is written
with who, from where, what and why. Identity headers sent from an untrusted address are
recorded on any method: someone tried to claim an identity. So is a refused identity
(a non-loopback client in `none` mode, ambiguous proxy identity headers) on any method,
with the refusal's details (peer, header counts).

Recording never fails the request: errors are logged and the response goes out as is.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.audit.log import AuditEvent, audit_marks, outcome_for_status
from dashboard.auth.guards import identity_of, refusal_raised
from dashboard.auth.identity import peer_address

if TYPE_CHECKING:
    from dashboard.context import Dashboard

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CAPTURE = 8192

# Route handler name -> audit action (the same names the services use).
ACTIONS = {
    "api_run_create": "run.request",
    "run_submit": "run.request",
    "api_run_cancel": "run.cancel",
    "api_run_approve": "run.approve",
    "run_approve_form": "run.approve",
    "api_run_reject": "run.reject",
    "run_reject_form": "run.reject",
    "api_run_execute": "run.execute",
    "run_execute_form": "run.execute",
    "backend_cancel": "backend.cancel",
    "backend_terminate": "backend.terminate",
    "login_submit": "login",
    "logout": "logout",
}


def should_record(
    method: str, status: int, claimed_identity: bool, identity_refused: bool = False
) -> bool:
    """Pure: which responses are denied attempts worth an audit row."""
    if not 400 <= status < 500:
        return False
    if method.upper() not in SAFE_METHODS or identity_refused:
        return True
    return claimed_identity and status in (401, 403)


def action_for(handler_name: str | None, method: str) -> str:
    if handler_name and handler_name in ACTIONS:
        return ACTIONS[handler_name]
    return "http.request" if method.upper() not in SAFE_METHODS else "auth.identity"


def error_from_body(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict):
        err = data.get("error") or data.get("detail") or data.get("message")
        return str(err)[:500] if err else None
    return None


class AuditDenialsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        marks: list[int] = []
        token = audit_marks.set(marks)
        started: dict[str, Any] = {}
        captured = bytearray()

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                started["status"] = int(message["status"])
            elif (
                message["type"] == "http.response.body"
                and started.get("status", 200) >= 400
                and len(captured) < MAX_CAPTURE
            ):
                captured.extend(message.get("body", b"")[: MAX_CAPTURE - len(captured)])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            status = int(getattr(exc, "status_code", 500))
            await self._maybe_record(scope, status, getattr(exc, "detail", None), marks)
            raise
        else:
            if "status" in started:
                await self._maybe_record(
                    scope, started["status"], error_from_body(bytes(captured)), marks
                )
        finally:
            audit_marks.reset(token)

    async def _maybe_record(self, scope: Scope, status: int, error: Any, marks: list[int]) -> None:
        try:
            method = str(scope.get("method", "GET"))
            headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
            claimed = headers.get("x-forwarded-user", b"").decode("latin-1", "replace").strip()
            refusal = refusal_raised(scope)
            if marks or not should_record(method, status, bool(claimed), refusal is not None):
                return
            dash: Dashboard = scope["litestar_app"].state.dashboard
            if dash.audit is None:  # no database: nowhere to write
                return
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
            ident = identity_of(connection)
            handler = scope.get("route_handler")
            name = getattr(handler, "name", None)
            detail: dict[str, Any] = {
                "status_code": status,
                "method": method,
                "path": str(scope.get("path", ""))[:300],
                "error": str(error)[:500] if error else None,
                "role": ident.role if ident.authenticated else None,
            }
            if claimed and not ident.authenticated:
                detail["claimed_user"] = claimed[:200]
            if refusal is not None:
                detail["refusal"] = refusal.kind
                detail.update(refusal.detail)
            run_id = (scope.get("path_params") or {}).get("run_id")
            pid = (scope.get("path_params") or {}).get("pid")
            target = f"run {run_id}" if run_id is not None else None
            if target is None and pid is not None:
                target = f"backend pid {str(pid)[:20]}"
            await dash.audit.record(
                AuditEvent(
                    actor=ident.display,
                    action=action_for(name, method),
                    outcome=outcome_for_status(status, "refused"),
                    target=target,
                    address=ident.address or peer_address(connection),
                    detail=detail,
                )
            )
        except Exception:
            log.exception("recording a refused request failed")
