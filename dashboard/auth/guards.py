"""Guards: plain (connection, handler) -> None functions declared on route handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler

from dashboard.auth.identity import Identity, Refusal, identify
from dashboard.auth.roles import at_least

Guard = Callable[[ASGIConnection, BaseRouteHandler], None]

# Load-balancer probes answer everyone, whatever the identity: they reveal only liveness
# and readiness (and /readyz the database error). Every other route, public ones included
# (/metrics, /static, /login), refuses a request whose identity was refused.
PROBE_HANDLERS = frozenset({"healthz", "readyz"})
# scope["state"] key: the refusal a guard raised for this request (read by the audit
# middleware, so the refusal is recorded once, whatever the method)
REFUSAL_RAISED = "identity_refusal_raised"


def identity_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    cached = connection.scope.get("state", {}).get("identity")
    if isinstance(cached, Identity):
        return cached
    dash = connection.app.state.dashboard
    ident = identify(connection, dash.settings)
    connection.scope.setdefault("state", {})["identity"] = ident
    return ident


def refusal_raised(scope: Any) -> Refusal | None:
    found = (scope.get("state") or {}).get(REFUSAL_RAISED)
    return found if isinstance(found, Refusal) else None


def refuse(connection: ASGIConnection[Any, Any, Any, Any], ident: Identity) -> None:
    """Raise the identity's refusal, if it has one, and remember that it was raised."""
    refusal = ident.refusal
    if refusal is None:
        return
    connection.scope.setdefault("state", {})[REFUSAL_RAISED] = refusal
    exc: HTTPException
    if refusal.status_code == 403:
        exc = PermissionDeniedException(detail=refusal.reason)
    else:
        exc = ClientException(detail=refusal.reason, status_code=refusal.status_code)
    raise exc


def authenticated(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """App-wide guard: every route needs an identity unless it is marked `public`; no
    route but the load-balancer probes serves a request whose identity was refused (a
    non-loopback client in `none` mode, ambiguous proxy identity headers)."""
    if handler.name in PROBE_HANDLERS:
        return
    ident = identity_of(connection)
    refuse(connection, ident)
    if handler.opt.get("public"):
        return
    if ident.authenticated:
        return
    mode = connection.app.state.dashboard.settings.auth_mode
    if mode == "password":
        raise NotAuthorizedException(detail="sign in first (/login)")
    raise NotAuthorizedException(
        detail="no trusted identity: X-Forwarded-User is honoured only from "
        "DASHBOARD_TRUSTED_PROXIES addresses"
    )


def requires(role: str) -> Guard:
    """Guard factory: the caller must be authenticated and hold at least `role`."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        ident = identity_of(connection)
        refuse(connection, ident)
        if not ident.authenticated:
            raise NotAuthorizedException(detail="sign in first: no identity on this request")
        if not at_least(ident.role, role):
            raise PermissionDeniedException(
                detail=f"{ident.display} has role {ident.role}; this action needs {role}"
            )

    guard.__name__ = f"requires_{role}"
    return guard
