"""Guards: plain (connection, handler) -> None functions declared on route handlers."""

from __future__ import annotations

from collections.abc import Callable

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from dashboard.auth.identity import Identity, identify
from dashboard.auth.roles import at_least

Guard = Callable[[ASGIConnection, BaseRouteHandler], None]


def identity_of(connection: ASGIConnection) -> Identity:
    cached = connection.scope.get("state", {}).get("identity")
    if isinstance(cached, Identity):
        return cached
    dash = connection.app.state.dashboard
    ident = identify(connection, dash.settings)
    connection.scope.setdefault("state", {})["identity"] = ident
    return ident


def authenticated(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """App-wide guard: every route needs an identity unless it is marked `public`."""
    if handler.opt.get("public"):
        return
    ident = identity_of(connection)
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
        if not ident.authenticated:
            raise NotAuthorizedException(detail="sign in first: no identity on this request")
        if not at_least(ident.role, role):
            raise PermissionDeniedException(
                detail=f"{ident.display} has role {ident.role}; this action needs {role}"
            )

    guard.__name__ = f"requires_{role}"
    return guard
