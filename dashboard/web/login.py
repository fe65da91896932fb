"""Login and logout for `password` mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Body, FromQuery, SkipValidation
from litestar.response import Redirect, Template

from dashboard.audit.log import AuditEvent, AuditLog
from dashboard.auth import users
from dashboard.auth.identity import peer_address
from dashboard.auth.ratelimit import LoginLimiter
from dashboard.auth.session_store import SessionStoreUnavailable
from dashboard.auth.sessions import end_session, start_session
from dashboard.context import Dashboard
from dashboard.validation import InvalidText, clean_text
from dashboard.web.render import base_context


@dataclass
class LoginForm:
    username: str = ""
    password: str = ""
    next: str = "/"


def safe_next(target: str) -> str:
    """Only same-site relative paths: never redirect to another host after login."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def audit_login(
    audit: AuditLog | None,
    request: Request[Any, Any, Any],
    actor: str,
    action: str,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    """Login and logout rows; without a database there is nowhere to write them."""
    if audit is not None:
        await audit.record(
            AuditEvent(
                actor=actor,
                action=action,
                outcome=outcome,
                address=peer_address(request),
                detail=detail,
            )
        )


class LoginController(Controller):
    opt = {"public": True}

    def _require_password_mode(self, dashboard: Dashboard) -> None:
        if dashboard.settings.auth_mode != "password":
            raise NotFoundException(detail="login is only used in DASHBOARD_AUTH_MODE=password")

    def _form(
        self, request: Request[Any, Any, Any], error: str = "", next_: str = "/", username: str = ""
    ) -> Template:
        ctx = base_context(request, "login")
        ctx.update({"error": error, "next": next_, "username": username})
        return Template(template_name="auth/login.html", context=ctx)

    @get("/login", name="login")
    async def form(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        next: FromQuery[str] = "/",  # noqa: A002
    ) -> Template:
        self._require_password_mode(dashboard)
        return self._form(request, next_=safe_next(next))

    @post("/login", name="login_submit", status_code=200)
    async def submit(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        dashboard: NamedDependency[SkipValidation[Dashboard]],
        login_limiter: NamedDependency[LoginLimiter],
        audit: NamedDependency[AuditLog | None],
    ) -> Template | Redirect:
        self._require_password_mode(dashboard)
        address = peer_address(request)
        try:
            name = clean_text(data.username, "user name", max_len=64) or ""
        except InvalidText as exc:
            resp = self._form(request, f"The {exc.message}.", safe_next(data.next))
            resp.status_code = 400
            return resp
        wait = await login_limiter.retry_after(name, address)
        if wait > 0:
            await audit_login(
                audit, request, name or "anonymous", "login", "denied", {"reason": "rate limited"}
            )
            raise HTTPException(
                status_code=429,
                detail=f"too many failed logins; try again in {int(wait) + 1} s",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        if (
            not name
            or not data.password
            or not users.verify(dashboard.settings.users_file, name, data.password)
        ):
            await login_limiter.failed(name, address)
            await audit_login(audit, request, name or "anonymous", "login", "failed", {})
            resp = self._form(request, "Wrong user name or password.", safe_next(data.next), name)
            resp.status_code = 401
            return resp
        await login_limiter.succeeded(name, address)
        try:
            await start_session(request, {"user": name})  # a new id, stored before answering
        except SessionStoreUnavailable as exc:
            resp = self._form(
                request, f"Signing in is unavailable: {exc.detail}.", safe_next(data.next), name
            )
            resp.status_code = 503
            return resp
        await audit_login(audit, request, name, "login", "ok", {})
        return Redirect(path=request.scope.get("root_path", "") + safe_next(data.next))

    @post("/logout", name="logout", status_code=200)
    async def logout(
        self, request: Request[Any, Any, Any], audit: NamedDependency[AuditLog | None]
    ) -> Redirect:
        session = request.session if "session" in request.scope else {}
        user = session.get("user") if isinstance(session, dict) else None
        await end_session(request)  # deleted from the store, for every process, now
        if user:
            await audit_login(audit, request, str(user), "logout", "ok", {})
        return Redirect(path=request.scope.get("root_path", "") + "/login")
